//! Anti-entropy trees: one Tictac tree per partition over this node's own objects.
//!
//! Once the partition count is known ([`Replica::init_trees`]), the replica keeps one Tictac
//! tree per partition (`yeskv_core::tictac`) over its own objects. Every store replaces the key's
//! digest in O(1) under the partition's tree lock, taken around the WAL append so that a
//! background rebuild (which holds the lock while it scans the partition) never counts a write
//! twice. Trees are saved in `meta` at a clean shutdown and trusted at the next start only if the
//! clean marker is set; otherwise every partition is rebuilt in the background and reports no
//! root until it is ready.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use yeskv_core::codec::decode_record;
use yeskv_core::keyspace::partition_range;
use yeskv_core::tictac::{tree_digest, TictacTree, TreeGeometry};
use yeskv_core::Object;
use yeskv_storage::{Engine, Space};

use super::{scan_pages, Replica, Startup, META_TREE};
use crate::error::Error;

/// One anti-entropy tree per partition.
pub(super) struct Trees {
    pub(super) geometry: TreeGeometry,
    pub(super) trees: Vec<Mutex<TictacTree>>,
    pub(super) ready: Vec<AtomicBool>,
}

/// A partition's tree summary, for `/v1/status` and exchanges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeSummary {
    /// Root hash.
    pub root: u64,
    /// Keys in the tree.
    pub keys: u64,
}

impl<E: Engine> Replica<E> {
    pub(super) fn tree_of(&self, storage_key: &[u8]) -> Option<(&Trees, usize)> {
        let trees = self.trees.get()?;
        let p = usize::from(u16::from_be_bytes([
            *storage_key.first()?,
            *storage_key.get(1)?,
        ]));
        (p < trees.trees.len()).then_some((trees, p))
    }

    /// Sets up one anti-entropy tree per partition. Saved trees are loaded if the previous run
    /// stopped cleanly; returns the partitions whose tree must be rebuilt
    /// ([`Replica::rebuild_tree`], in the background). Later calls do nothing.
    pub fn init_trees(&self, partitions: u32) -> Vec<u16> {
        let geometry = TreeGeometry::default();
        let mut rebuild = Vec::new();
        let mut trees = Vec::with_capacity(partitions as usize);
        let mut ready = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let p = p as u16;
            let saved = if self.startup == Startup::Clean {
                self.engine
                    .get(Space::Meta, &tree_meta_key(p))
                    .ok()
                    .flatten()
                    .and_then(|b| TictacTree::from_bytes(&b, geometry).ok())
            } else {
                None
            };
            let ok = saved.is_some();
            if !ok {
                rebuild.push(p);
            }
            trees.push(Mutex::new(
                saved.unwrap_or_else(|| TictacTree::new(geometry)),
            ));
            ready.push(AtomicBool::new(ok));
        }
        if self
            .trees
            .set(Trees {
                geometry,
                trees,
                ready,
            })
            .is_err()
        {
            return Vec::new();
        }
        rebuild
    }

    /// Rebuilds one partition's tree by scanning its objects (holding the tree's lock: writes to
    /// that partition wait, others go on).
    pub fn rebuild_tree(&self, partition: u16) -> Result<(), Error> {
        let Some(trees) = self.trees.get() else {
            return Ok(());
        };
        let Some(slot) = trees.trees.get(usize::from(partition)) else {
            return Ok(());
        };
        let mut tree = slot.lock();
        let mut fresh = TictacTree::new(trees.geometry);
        self.for_each_in_partition(partition, |key, obj| {
            if let Some(d) = tree_digest(key, obj) {
                fresh.add(key, d);
            }
        })?;
        *tree = fresh;
        trees.ready[usize::from(partition)].store(true, Ordering::Release);
        Ok(())
    }

    /// Calls `f` with every readable object of `partition` (corrupt ones are counted, skipped).
    pub fn for_each_in_partition(
        &self,
        partition: u16,
        mut f: impl FnMut(&[u8], &Object),
    ) -> Result<(), Error> {
        let (start, end) = partition_range(partition);
        scan_pages(
            &self.engine,
            Space::Data,
            start,
            &end,
            |key, raw| match decode_record(raw) {
                Ok(obj) => f(key, &obj),
                Err(e) => {
                    let _ = self.corrupt(key, e.to_string());
                }
            },
        )
    }

    /// The number of partitions the trees cover (`None` before [`Replica::init_trees`]).
    pub fn tree_partitions(&self) -> Option<u32> {
        self.trees.get().map(|t| t.trees.len() as u32)
    }

    /// The tree summary of `partition`, if its tree is ready.
    pub fn tree_summary(&self, partition: u16) -> Option<TreeSummary> {
        let trees = self.trees.get()?;
        let p = usize::from(partition);
        if !trees.ready.get(p)?.load(Ordering::Acquire) {
            return None;
        }
        let t = trees.trees[p].lock();
        Some(TreeSummary {
            root: t.root(),
            keys: t.key_count(),
        })
    }

    /// Runs `f` on the ready tree of `partition`.
    pub fn with_tree<T>(&self, partition: u16, f: impl FnOnce(&TictacTree) -> T) -> Option<T> {
        let trees = self.trees.get()?;
        let p = usize::from(partition);
        if !trees.ready.get(p)?.load(Ordering::Acquire) {
            return None;
        }
        let t = trees.trees[p].lock();
        Some(f(&t))
    }

    /// The `(storage_key, digest)` of every object of `partition` in `segments` (sorted by key).
    /// The scan reads the whole partition anyway, so it also checks the partition's tree
    /// against the disk and replaces a tree that disagrees (counted in
    /// `yeskv_aae_trees_replaced_total`). It holds the tree's lock meanwhile: stores to the
    /// partition wait for one partition scan, which happens only when an exchange found
    /// segments that differ.
    pub fn segment_keys(
        &self,
        partition: u16,
        segments: &[u32],
    ) -> Result<Vec<(Vec<u8>, u64)>, Error> {
        let Some(trees) = self.trees.get() else {
            return Ok(Vec::new());
        };
        let p = usize::from(partition);
        let Some(lock) = trees.trees.get(p) else {
            return Ok(Vec::new());
        };
        let geometry = trees.geometry;
        let wanted: std::collections::BTreeSet<u32> = segments.iter().copied().collect();
        let mut out = Vec::new();
        let mut fresh = TictacTree::new(geometry);
        // The scan runs under the tree's lock (stores to the partition wait, as during a
        // rebuild), so the tree and the disk are compared at one instant.
        let mut tree = lock.lock();
        let corrupt_before = self.corrupt_total();
        self.for_each_in_partition(partition, |key, obj| {
            if let Some(d) = tree_digest(key, obj) {
                fresh.add(key, d);
                if wanted.contains(&geometry.segment_of(key)) {
                    out.push((key.to_vec(), d));
                }
            }
        })?;
        // The scan has just computed the whole tree: if the kept one disagrees, it no longer
        // describes the disk (a bug, a bit flip, a store that escaped it) and no exchange could
        // ever fix it — syncing equal objects changes nothing. Replace it.
        // A corrupt record has no digest to put in a fresh tree; the kept tree still holds the
        // last good one, which keeps the partition comparable, so it stays.
        if trees.ready[p].load(Ordering::Acquire)
            && self.corrupt_total() == corrupt_before
            && fresh.segments() != tree.segments()
        {
            tracing::warn!(
                partition,
                "anti-entropy tree disagreed with the disk; replaced"
            );
            metrics::counter!(crate::metrics::AAE_TREES_REPLACED).increment(1);
            *tree = fresh;
        }
        Ok(out)
    }
}

pub(super) fn tree_meta_key(partition: u16) -> Vec<u8> {
    let mut k = META_TREE.to_vec();
    k.extend_from_slice(&partition.to_be_bytes());
    k
}
