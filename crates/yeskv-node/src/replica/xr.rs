//! The cross-region queue: what this node's coordinated writes still owe the other regions.
//!
//! With replicas per region, a write acknowledged by a local quorum is not yet anywhere in the
//! other regions, and the coordinator may crash right after answering. So the coordinator's
//! store of the write carries, **in the same write batch** as the record, one entry per other
//! region holding replicas of the key: `meta` key `xr/‖region‖0‖queued_ms‖seq` (u64s
//! big-endian, so a region's entries sort oldest first), value `key_hash‖storage_key`. What the
//! entry carries is only *which key*: the worker (`crate::xr`) reads the key's current object
//! when it sends, so repeated writes to one key go over the WAN once.
//!
//! The queue is bounded per region (`cross_region.queue_entries_max`). Past it a write is
//! still taken and acknowledged — the store never says no for a slow WAN — but nothing more is
//! queued for that region: the write reaches it by anti-entropy, which exchanges trees between
//! every two data holders of a partition, regions included. Such writes are counted
//! (`yeskv_xr_overflow_total`, [`XrRegion::overflowed`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use yeskv_storage::{Engine, Space, WriteBatch};

use super::{scan_pages, Replica};
use crate::error::Error;

/// Prefix of a cross-region queue entry in `meta` (module docs).
pub const META_XR_QUEUE: &[u8] = b"xr/";

/// Default bound on one region's queue.
pub const QUEUE_ENTRIES_MAX_DEFAULT: u64 = 1_000_000;

/// One queued entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XrEntry {
    /// Its key in `meta` (to remove it once delivered).
    pub queue_key: Vec<u8>,
    /// When the write was stored, by this node's clock.
    pub queued_ms: u64,
    /// The key's hash.
    pub key_hash: u64,
    /// The key's storage key.
    pub storage_key: Vec<u8>,
}

/// One region's queue, as counted in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XrRegion {
    /// Entries queued.
    pub entries: u64,
    /// Writes not queued because the queue was full, since this node started.
    pub overflowed: u64,
}

/// In-memory counts of the queue (exact: counted at open, then kept with every batch).
#[derive(Debug, Default)]
pub(super) struct XrBook {
    pub(super) regions: BTreeMap<String, XrRegion>,
    /// The next entry's sequence number.
    pub(super) seq: u64,
    pub(super) entries_max: u64,
}

fn region_prefix(region: &str) -> Vec<u8> {
    let mut k = META_XR_QUEUE.to_vec();
    k.extend_from_slice(region.as_bytes());
    k.push(0);
    k
}

fn queue_key(region: &str, queued_ms: u64, seq: u64) -> Vec<u8> {
    let mut k = region_prefix(region);
    k.extend_from_slice(&queued_ms.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `(region, queued_ms, seq)` of a queue key.
fn parse_key(k: &[u8]) -> Option<(&str, u64, u64)> {
    let rest = k.strip_prefix(META_XR_QUEUE)?;
    let sep = rest.iter().position(|b| *b == 0)?;
    let region = std::str::from_utf8(&rest[..sep]).ok()?;
    let tail = &rest[sep + 1..];
    if tail.len() != 16 {
        return None;
    }
    let ms = u64::from_be_bytes(tail[..8].try_into().ok()?);
    let seq = u64::from_be_bytes(tail[8..].try_into().ok()?);
    Some((region, ms, seq))
}

fn parse_entry(k: Vec<u8>, v: &[u8]) -> Option<XrEntry> {
    let (_, queued_ms, _) = parse_key(&k)?;
    let key_hash = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    Some(XrEntry {
        queue_key: k,
        queued_ms,
        key_hash,
        storage_key: v.get(8..)?.to_vec(),
    })
}

/// Counts the queue on disk (at open).
pub(super) fn count_queue<E: Engine>(engine: &E) -> Result<XrBook, Error> {
    let mut book = XrBook {
        entries_max: QUEUE_ENTRIES_MAX_DEFAULT,
        ..XrBook::default()
    };
    let mut end = META_XR_QUEUE.to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    scan_pages(engine, Space::Meta, META_XR_QUEUE.to_vec(), &end, |k, _| {
        if let Some((region, _, seq)) = parse_key(k) {
            book.regions.entry(region.to_string()).or_default().entries += 1;
            book.seq = book.seq.max(seq + 1);
        }
    })?;
    Ok(book)
}

impl<E: Engine> Replica<E> {
    /// Sets the bound on each region's queue (`cross_region.queue_entries_max`).
    pub fn set_xr_queue_max(&self, entries_max: u64) {
        self.xr.lock().entries_max = entries_max;
    }

    /// Adds to `b` an entry for each of `regions` (module docs), unless its queue is full.
    /// Returns what to count once `b` is committed.
    pub(super) fn xr_enqueue(
        &self,
        b: &mut WriteBatch,
        regions: &[Arc<str>],
        key_hash: u64,
        storage_key: &[u8],
        now_ms: u64,
    ) -> Vec<Arc<str>> {
        if regions.is_empty() {
            return Vec::new();
        }
        let mut book = self.xr.lock();
        let max = book.entries_max;
        let mut queued = Vec::with_capacity(regions.len());
        for region in regions {
            let seq = book.seq;
            let r = book.regions.entry(region.to_string()).or_default();
            if r.entries >= max {
                r.overflowed += 1;
                metrics::counter!(crate::metrics::XR_OVERFLOW, "region" => region.to_string())
                    .increment(1);
                continue;
            }
            // Counted now, under the lock, so the bound holds with writes in flight; taken back
            // by `xr_unqueue` if the batch fails.
            r.entries += 1;
            book.seq += 1;
            let mut value = key_hash.to_be_bytes().to_vec();
            value.extend_from_slice(storage_key);
            b.put(Space::Meta, queue_key(region, now_ms, seq), value);
            queued.push(region.clone());
        }
        queued
    }

    /// Takes back the counts of entries whose batch was not committed.
    pub(super) fn xr_unqueue(&self, regions: &[Arc<str>]) {
        let mut book = self.xr.lock();
        for region in regions {
            if let Some(r) = book.regions.get_mut(&region[..]) {
                r.entries = r.entries.saturating_sub(1);
            }
        }
    }

    /// Wakes the worker (entries were queued).
    pub(super) fn xr_notify(&self) {
        self.xr_queued.notify_one();
    }

    /// Resolves when entries were queued since the last call returned (or before the first).
    pub async fn xr_queued(&self) {
        self.xr_queued.notified().await
    }

    /// Up to `limit` of `region`'s oldest entries.
    pub fn xr_peek(&self, region: &str, limit: usize) -> Result<Vec<XrEntry>, Error> {
        self.xr_peek_from(region, None, limit)
    }

    /// Up to `limit` of `region`'s entries from queue key `from` on (from the oldest without
    /// one). A sender that resumes where its last batch ended does not step over the
    /// tombstones of every entry it removed before, as a scan from the region's start would
    /// until they are compacted away.
    pub fn xr_peek_from(
        &self,
        region: &str,
        from: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<XrEntry>, Error> {
        let prefix = region_prefix(region);
        let mut end = prefix.clone();
        *end.last_mut().expect("non-empty prefix") += 1;
        let start = match from {
            Some(k) if k.starts_with(&prefix) => k.to_vec(),
            _ => prefix,
        };
        let rows = self.engine.scan(Space::Meta, &start, &end, limit)?;
        Ok(rows
            .into_iter()
            .filter_map(|(k, v)| parse_entry(k, &v))
            .collect())
    }

    /// Removes delivered entries of `region`.
    pub fn xr_remove(&self, region: &str, entries: &[XrEntry]) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut b = WriteBatch::new();
        for e in entries {
            b.delete(Space::Meta, e.queue_key.clone());
        }
        drop(self.commit(b)?);
        let mut book = self.xr.lock();
        if let Some(r) = book.regions.get_mut(region) {
            r.entries = r.entries.saturating_sub(entries.len() as u64);
        }
        Ok(())
    }

    /// Each region's queue, as counted.
    pub fn xr_regions(&self) -> BTreeMap<String, XrRegion> {
        self.xr.lock().regions.clone()
    }

    /// When `region`'s oldest entry was queued, if any is.
    pub fn xr_oldest_ms(&self, region: &str) -> Result<Option<u64>, Error> {
        Ok(self.xr_peek(region, 1)?.first().map(|e| e.queued_ms))
    }

    /// Entries queued, all regions together.
    pub fn xr_pending(&self) -> u64 {
        self.xr.lock().regions.values().map(|r| r.entries).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::{Change, Slot};
    use yeskv_core::{CausalContext, NodeId, Version};
    use yeskv_storage::MemoryEngine;

    async fn write(r: &Replica<Arc<MemoryEngine>>, key: &[u8], xr: &[Arc<str>], at: u64) {
        let v = Version::value(b"v".to_vec(), at, None);
        r.coordinate_queuing(
            Slot::Own,
            7,
            key,
            Change::Put {
                ctx: &CausalContext::empty(),
                version: v,
            },
            at,
            xr,
        )
        .await
        .expect("write");
    }

    /// Entries are queued with the write, per region, oldest first; they survive a crash
    /// (reopen without a clean close) with their counts; removing them counts down; past the
    /// bound a write is still taken but not queued, and counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_queue_is_written_with_the_record_and_bounded() {
        let engine = Arc::new(MemoryEngine::new());
        let node = NodeId::new("n1").expect("id");
        let (r, _) = Replica::open(engine.clone(), node.clone(), 0, || 1)
            .await
            .expect("open");
        let (r2, r3): (Arc<str>, Arc<str>) = (Arc::from("r2"), Arc::from("r3"));
        write(&r, b"a", &[r2.clone(), r3.clone()], 10).await;
        write(&r, b"b", std::slice::from_ref(&r2), 20).await;
        write(&r, b"c", &[], 30).await;
        let counts = r.xr_regions();
        assert_eq!((counts["r2"].entries, counts["r3"].entries), (2, 1));
        let q = r.xr_peek("r2", 10).expect("peek");
        let keys: Vec<&[u8]> = q.iter().map(|e| &e.storage_key[..]).collect();
        assert_eq!(keys, [&b"a"[..], &b"b"[..]]);
        assert_eq!((q[0].queued_ms, q[0].key_hash), (10, 7));
        assert_eq!(r.xr_oldest_ms("r3").expect("oldest"), Some(10));

        drop(r);
        let (r, _) = Replica::open(engine.clone(), node, 0, || 2)
            .await
            .expect("reopen");
        assert_eq!(r.xr_regions()["r2"].entries, 2, "counted again at open");
        let first = r.xr_peek("r2", 1).expect("peek");
        r.xr_remove("r2", &first).expect("remove");
        assert_eq!(r.xr_regions()["r2"].entries, 1);
        assert_eq!(r.xr_peek("r2", 10).expect("peek")[0].storage_key, b"b");

        r.set_xr_queue_max(1);
        write(&r, b"d", &[r2.clone(), r3.clone()], 40).await;
        let counts = r.xr_regions();
        assert_eq!(
            (counts["r2"].entries, counts["r2"].overflowed),
            (1, 1),
            "r2 full: the write is taken, not queued"
        );
        assert_eq!((counts["r3"].entries, counts["r3"].overflowed), (1, 1));
        assert_eq!(r.read(b"d").expect("read").siblings().len(), 1);
        let r3_keys = r.xr_peek("r3", 10).expect("peek");
        assert_eq!(r3_keys.len(), 1);
        assert_eq!(r.xr_pending(), 2);
    }

    #[test]
    fn keys_round_trip_and_sort_oldest_first() {
        let a = queue_key("r2", 5, 9);
        let b = queue_key("r2", 6, 1);
        assert!(a < b, "earlier first, whatever the sequence");
        assert_eq!(parse_key(&a), Some(("r2", 5, 9)));
        let other = queue_key("r20", 1, 1);
        let (start, mut end) = (region_prefix("r2"), region_prefix("r2"));
        *end.last_mut().expect("non-empty") += 1;
        assert!(
            !(start <= other && other < end),
            "r20's entries are not r2's"
        );
        assert_eq!(parse_key(b"xr/r2"), None);
    }
}
