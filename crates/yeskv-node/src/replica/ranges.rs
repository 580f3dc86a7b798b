//! Whole-partition operations: streaming a partition's records out to a node receiving it,
//! measuring it, clearing it and giving its disk space back.
//!
//! These serve data movement ([`crate::transfer`]): a source answers batches of
//! [`Replica::scan_records`] in key order, a receiver merges them ([`Replica::merge_many`]) and
//! keeps its place in [`Replica::write_meta`], a node receiving a partition anew or a former
//! holder cleaning up calls [`Replica::clear_partition`], and [`Replica::partition_size`] feeds
//! the plan's bytes and the transfer's progress. [`Replica::holds_bucket`] tells whether a
//! bucket has any key here (a bucket's data type may change only while it has none:
//! `crate::buckets`).

use std::sync::atomic::Ordering;

use yeskv_core::codec::decode_record;
use yeskv_core::keyspace::{partition_range, storage_key};
use yeskv_storage::{Engine, Space, WriteBatch};

use super::Replica;
use crate::error::Error;

/// Rows read per engine scan by the operations of this module.
const PAGE_ROWS: usize = 512;

/// Bytes a row of a transfer batch takes on the wire beside its key and record: the two
/// length prefixes (postcard varints of at most 5 bytes each below 4 GiB).
const ROW_FRAMING_BYTES: usize = 10;

/// A run of a partition's records in key order (see [`Replica::scan_records`]).
pub struct Records {
    /// `(storage key, stored record)`, each record verified.
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
    /// Where the next run starts (exclusive), or `None` when the partition's end was reached.
    pub next: Option<Vec<u8>>,
    /// Corrupt records met and left out (counted and logged as corrupt: never served).
    pub corrupt: u64,
    /// Expired expiring objects met and left out (`crate::expiry`: the receiver would not
    /// store them, and they must not come back).
    pub expired: u64,
}

impl<E: Engine> Replica<E> {
    /// Whether this node stores any key of `bucket` in partitions `0..partitions`: among its own
    /// copies, and among the hints it keeps for other nodes (a write acknowledged while its
    /// primaries were down may exist only there). Any key counts, a tombstone or an expired
    /// value too: it is still a key of the bucket. One seek of one row per partition (and per
    /// partition and hint target): storage keys start with `partition ‖ len(bucket) ‖ bucket`,
    /// so the first key at or after that prefix is one of the bucket's exactly when the bucket
    /// has a key in the partition. Blocking (up to 65,536 seeks): call it off the async threads.
    pub fn holds_bucket(&self, bucket: &[u8], partitions: u32) -> Result<bool, Error> {
        let targets: Vec<_> = self.hint_counts().into_keys().collect();
        for partition in 0..partitions.min(u32::from(u16::MAX) + 1) {
            let partition = partition as u16;
            let prefix = storage_key(partition, bucket, &[]);
            let (_, end) = partition_range(partition);
            let first = self.engine.scan(Space::Data, &prefix, &end, 1)?;
            if first.first().is_some_and(|(k, _)| k.starts_with(&prefix)) {
                return Ok(true);
            }
            for target in &targets {
                let start = super::hints::hint_key(target, &prefix);
                let end = super::hints::hint_key(target, &end);
                let first = self.engine.scan(Space::Hints, &start, &end, 1)?;
                if first.first().is_some_and(|(k, _)| k.starts_with(&start)) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// The records of `partition` after `after` (from its start when `None`), in key order,
    /// at most `bytes_max` bytes of keys and records with their length prefixes — or, when the
    /// first record alone is larger, that one record: a batch fits the internode frame whenever
    /// `bytes_max` and every object do (`crate::peer`, "What fits in one frame"). Each record is
    /// verified before it is sent; a corrupt one is left out (the receiver gets that key from
    /// another holder when it syncs with each of them), and so is an object that is expiring
    /// and expired at `now_ms`.
    pub fn scan_records(
        &self,
        partition: u16,
        after: Option<&[u8]>,
        bytes_max: usize,
        now_ms: u64,
    ) -> Result<Records, Error> {
        let (start, end) = partition_range(partition);
        let mut from = match after {
            Some(a) if a >= start.as_slice() => {
                let mut f = a.to_vec();
                f.push(0);
                f
            }
            _ => start,
        };
        let mut out = Records {
            rows: Vec::new(),
            next: None,
            corrupt: 0,
            expired: 0,
        };
        let mut bytes = 0;
        loop {
            let page = self.engine.scan(Space::Data, &from, &end, PAGE_ROWS)?;
            let full = page.len() == PAGE_ROWS;
            for (key, record) in page {
                let row_bytes = key.len() + record.len() + ROW_FRAMING_BYTES;
                // The row that would pass the bound starts the next batch (a large object
                // after small ones would otherwise double the batch).
                if bytes + row_bytes > bytes_max && !out.rows.is_empty() {
                    out.next = out.rows.last().map(|(k, _)| k.clone());
                    return Ok(out);
                }
                from.clone_from(&key);
                match decode_record(&record) {
                    Ok(obj) if crate::expiry::expired(&obj, now_ms) => out.expired += 1,
                    Ok(_) => {
                        bytes += row_bytes;
                        out.rows.push((key, record));
                    }
                    Err(e) => {
                        let _ = self.corrupt(&key, e.to_string());
                        out.corrupt += 1;
                    }
                }
            }
            if !full {
                return Ok(out);
            }
            from.push(0);
        }
    }

    /// Keys and bytes (keys and stored records) this node holds of `partition`, by scanning it.
    pub fn partition_size(&self, partition: u16) -> Result<(u64, u64), Error> {
        let (start, end) = partition_range(partition);
        let (mut keys, mut bytes) = (0u64, 0u64);
        super::scan_pages(&self.engine, Space::Data, start, &end, |k, v| {
            keys += 1;
            bytes += (k.len() + v.len()) as u64;
        })?;
        Ok((keys, bytes))
    }

    /// Reads one record of the node's own state (`meta`).
    pub fn read_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.engine.get(Space::Meta, key)?)
    }

    /// Every `meta` record whose key starts with `prefix`.
    pub fn scan_meta(&self, prefix: &[u8]) -> Result<yeskv_storage::Rows, Error> {
        let mut end = prefix.to_vec();
        end.push(0xff);
        let mut rows = Vec::new();
        super::scan_pages(&self.engine, Space::Meta, prefix.to_vec(), &end, |k, v| {
            rows.push((k.to_vec(), v.to_vec()))
        })?;
        Ok(rows)
    }

    /// Sets (or with `None` removes) one record of the node's own state, durably.
    pub async fn write_meta(&self, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), Error> {
        let mut b = WriteBatch::new();
        match value {
            Some(v) => b.put(Space::Meta, key, v),
            None => b.delete(Space::Meta, key),
        };
        self.commit(b)?.wait().await?;
        Ok(())
    }

    /// Removes every key of `partition` from this replica with one range delete, and empties
    /// the partition's tree. Two callers:
    /// - a node receiving a partition anew ([`crate::transfer`]): what it still holds of it
    ///   from an earlier time as a holder may be older than what the holders kept (a value
    ///   whose tombstone was since reaped there), and must not be read or pushed back. Writes
    ///   that arrive meanwhile may be removed too; each also reached a quorum of the
    ///   partition's data holders, and the transfer brings it back;
    /// - a former holder cleaning up once the partition's transfer is confirmed
    ///   ([`crate::transfer::cleanup`]).
    ///
    /// Every key stripe and the partition's tree are held while the delete is applied, so no
    /// read-modify-write of a key of the partition straddles it and the empty tree is exact
    /// (corrupt records go too). Returns the keys the tree counted before.
    pub async fn clear_partition(&self, partition: u16) -> Result<u64, Error> {
        let (start, end) = partition_range(partition);
        let (durable, removed) = {
            let _stripes: Vec<_> = self.stripes.iter().map(|s| s.lock()).collect();
            let trees = self.trees.get();
            let slot = trees.and_then(|t| t.trees.get(usize::from(partition)));
            let mut tree = slot.map(|t| t.lock());
            if self.closed.load(Ordering::SeqCst) {
                return Err(Error::NotServing("shutting down"));
            }
            let removed = tree.as_ref().map_or(0, |t| t.key_count());
            let mut b = WriteBatch::new();
            b.delete_range(Space::Data, start, end);
            let durable = self.commit(b)?;
            if let (Some(trees), Some(tree)) = (trees, tree.as_mut()) {
                **tree = yeskv_core::tictac::TictacTree::new(trees.geometry);
                trees.ready[usize::from(partition)].store(true, Ordering::Release);
            }
            (durable, removed)
        };
        durable.wait().await?;
        Ok(removed)
    }

    /// Compacts `partition`'s key range, so that the disk space a [`Replica::clear_partition`]
    /// freed is given back now rather than at the next natural compaction.
    pub async fn compact_partition(
        self: &std::sync::Arc<Self>,
        partition: u16,
    ) -> Result<(), Error> {
        let (start, end) = partition_range(partition);
        let replica = self.clone();
        let compact = move || replica.engine.compact_range(Space::Data, &start, &end);
        crate::workers::off_async("compaction", compact).await??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use yeskv_core::keyspace::storage_key;
    use yeskv_core::{CausalContext, NodeId, Version};
    use yeskv_storage::MemoryEngine;

    use super::*;
    use crate::replica::Slot;

    /// A batch holds at most its bytes: a large record after small ones starts the next batch
    /// instead of doubling this one, and a record larger than the bound goes alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_batch_stays_within_its_bytes() {
        let node = NodeId::new("n1").expect("valid");
        let (r, _) = Replica::open(Arc::new(MemoryEngine::new()), node, 0, || 1)
            .await
            .expect("open");
        for (key, len) in [("a", 100), ("b", 100), ("c", 5000), ("d", 100)] {
            let v = Version::value(vec![7; len], 1, None);
            let sk = storage_key(3, b"b", key.as_bytes());
            r.coordinate(Slot::Own, 1, &sk, &CausalContext::empty(), v, 1)
                .await
                .expect("write");
        }
        let mut after = None;
        let mut batches = Vec::new();
        loop {
            let run = r.scan_records(3, after.as_deref(), 1000, 1).expect("scan");
            let keys: Vec<u8> = run.rows.iter().map(|(k, _)| k[k.len() - 1]).collect();
            let bytes: usize = run.rows.iter().map(|(k, v)| k.len() + v.len()).sum();
            assert!(bytes <= 1000 || run.rows.len() == 1, "{keys:?}: {bytes}");
            batches.push(String::from_utf8(keys).expect("ascii"));
            match run.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(batches, ["ab", "c", "d"]);
    }

    /// A bucket is held when any partition has a key of it, a tombstone or a hint for another
    /// node included; buckets whose names extend or prefix it are other buckets.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_bucket_is_held_by_any_key_of_it_tombstones_and_hints_included() {
        let node = NodeId::new("n1").expect("valid");
        let other = NodeId::new("n2").expect("valid");
        let (r, _) = Replica::open(Arc::new(MemoryEngine::new()), node, 0, || 1)
            .await
            .expect("open");
        let write = |slot, partition: u16, bucket: &'static [u8], version: Version| {
            let r = &r;
            async move {
                let sk = storage_key(partition, bucket, b"k");
                r.coordinate(slot, 1, &sk, &CausalContext::empty(), version, 1)
                    .await
                    .expect("write");
            }
        };
        assert!(!r.holds_bucket(b"ab", 8).expect("scan"));
        write(Slot::Own, 5, b"ab", Version::value(b"v".to_vec(), 1, None)).await;
        assert!(r.holds_bucket(b"ab", 8).expect("scan"));
        assert!(!r.holds_bucket(b"a", 8).expect("scan"));
        assert!(!r.holds_bucket(b"abc", 8).expect("scan"));
        assert!(
            !r.holds_bucket(b"ab", 5).expect("scan"),
            "partition 5 not asked"
        );

        write(Slot::Own, 7, b"gone", Version::tombstone(1)).await;
        assert!(r.holds_bucket(b"gone", 8).expect("scan"));

        write(
            Slot::HintFor(&other),
            0,
            b"hinted",
            Version::value(b"v".to_vec(), 1, None),
        )
        .await;
        assert!(r.holds_bucket(b"hinted", 8).expect("scan"));
        assert!(!r.holds_bucket(b"hint", 8).expect("scan"));
    }

    /// A transfer leaves out expired expiring objects (and only those): they would not be
    /// stored by the receiver, and must not come back there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_batch_leaves_out_expired_expiring_objects() {
        let node = NodeId::new("n1").expect("valid");
        let (r, _) = Replica::open(Arc::new(MemoryEngine::new()), node, 0, || 1)
            .await
            .expect("open");
        for (key, expires) in [
            ("a", Some(50)),
            ("b", None),
            ("c", Some(500)),
            ("d", Some(10)),
        ] {
            let v = Version::value(vec![7; 10], 1, expires);
            let sk = storage_key(3, b"b", key.as_bytes());
            r.coordinate(Slot::Own, 1, &sk, &CausalContext::empty(), v, 1)
                .await
                .expect("write");
        }
        let run = r.scan_records(3, None, 1 << 20, 100).expect("scan");
        let keys: String = run
            .rows
            .iter()
            .map(|(k, _)| char::from(k[k.len() - 1]))
            .collect();
        assert_eq!((keys.as_str(), run.expired), ("bc", 2));
        assert!(run.next.is_none());
    }
}
