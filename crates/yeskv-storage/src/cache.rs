//! # The object cache: point reads of user data without the LSM
//!
//! [`CachedEngine`] wraps an [`Engine`] and keeps recently read records of [`Space::Data`] in
//! memory (a weight-bounded S3-FIFO cache, `quick_cache`), absent keys included. Every read of
//! a user key goes through it — a client's read, and the read-before-write of every write — so
//! a hit skips RocksDB's memtable and SST lookups, which were the largest single cost of a
//! node under a read-heavy load (see `docs/performance.md`). Cassandra's row cache plays the
//! same part.
//!
//! Correctness rests on three rules, none of which trusts the caller to serialise anything:
//! - A write never puts a value into the cache: after the inner engine applied it, it *removes*
//!   every data key of the batch, so two racing writers leave no entry behind whatever the order
//!   of their removals. A write that failed removes them too (its outcome may be unknown).
//! - A read fills the cache only if no write touched the key's stripe while it read: each of
//!   [`STRIPES`] stripes carries a stamp that a write bumps under the stripe's lock before it
//!   removes the key, and the filler inserts under the same lock only if the stamp it saw
//!   before reading is unchanged. A filler that read the old value before a racing write can
//!   therefore never insert it after the write's removal.
//! - The inner engine's [`Engine::epoch`] changes when its contents may have changed other than
//!   by a write (RocksDB reopened after a write failure may have lost writes it had shown): a
//!   read that sees a new epoch empties the cache first, and a fill is refused unless the epoch
//!   is still the one seen before reading.
//!
//! Records are cached as the engine stored them (checksummed bytes): callers verify and decode
//! them as they would a record read from disk. Scans, hints and metadata bypass the cache.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use quick_cache::sync::Cache;
use quick_cache::Weighter;

use crate::{Durable, Engine, EngineStat, Error, Op, Rows, Space, SyncMode, WriteBatch};

/// Stripes of fill/write coordination (see the module docs). A collision only costs a fill.
pub const STRIPES: usize = 1024;

/// Bytes counted per entry beyond its key and value (the cache's own bookkeeping).
const ENTRY_OVERHEAD: u64 = 64;

/// A cached lookup: the stored record, or `None` for a key known to be absent.
type Cached = Option<Arc<[u8]>>;

#[derive(Clone)]
struct ByBytes;

impl Weighter<Vec<u8>, Cached> for ByBytes {
    fn weight(&self, key: &Vec<u8>, val: &Cached) -> u64 {
        key.len() as u64 + val.as_ref().map_or(0, |v| v.len() as u64) + ENTRY_OVERHEAD
    }
}

/// An [`Engine`] with an object cache in front of its point reads of [`Space::Data`].
pub struct CachedEngine<E> {
    inner: E,
    cache: Cache<Vec<u8>, Cached, ByBytes>,
    /// Per stripe: how many writes touched a key of the stripe.
    stamps: Box<[Mutex<u64>]>,
    /// The inner engine's epoch the cached entries were read in.
    epoch: AtomicU64,
    /// Fills hold it shared while they check and insert; emptying the cache holds it alone, so
    /// no fill that checked an old epoch can insert after the cache was emptied for a new one.
    fill_gate: RwLock<()>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<E: Engine> CachedEngine<E> {
    /// Wraps `inner` with a cache of at most `capacity_bytes` (keys, records and overhead).
    pub fn new(inner: E, capacity_bytes: u64) -> Self {
        let estimated_items = (capacity_bytes / 256).clamp(16, 1 << 24) as usize;
        CachedEngine {
            epoch: AtomicU64::new(inner.epoch()),
            fill_gate: RwLock::new(()),
            inner,
            cache: Cache::with_weighter(estimated_items, capacity_bytes, ByBytes),
            stamps: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The wrapped engine.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    fn stripe(key: &[u8]) -> usize {
        crc32c::crc32c(key) as usize % STRIPES
    }

    /// Empties the cache if the inner engine's contents changed behind it; the current epoch.
    fn current_epoch(&self) -> u64 {
        let now = self.inner.epoch();
        if self.epoch.load(Ordering::Acquire) != now {
            let _alone = self.fill_gate.write();
            self.cache.clear();
            self.epoch.store(now, Ordering::Release);
        }
        now
    }

    /// Forgets `key` after a write touched it (or may have).
    fn invalidate(&self, key: &[u8]) {
        let mut stamp = self.stamps[Self::stripe(key)].lock();
        *stamp = stamp.wrapping_add(1);
        self.cache.remove(key);
    }
}

impl<E: Engine> Engine for CachedEngine<E> {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if space != Space::Data {
            return self.inner.get(space, key);
        }
        let epoch = self.current_epoch();
        if let Some(cached) = self.cache.get(key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(cached.map(|v| v.to_vec()));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let stripe = &self.stamps[Self::stripe(key)];
        let seen = *stripe.lock();
        let read = self.inner.get(space, key)?;
        let _shared = self.fill_gate.read();
        let stamp = stripe.lock();
        if *stamp == seen
            && self.inner.epoch() == epoch
            && self.epoch.load(Ordering::Acquire) == epoch
        {
            self.cache
                .insert(key.to_vec(), read.as_deref().map(Arc::from));
        }
        drop(stamp);
        Ok(read)
    }

    fn write(&self, batch: WriteBatch) -> Result<Durable, Error> {
        let touched: Vec<Vec<u8>> = batch
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Put {
                    space: Space::Data,
                    key,
                    ..
                }
                | Op::Delete {
                    space: Space::Data,
                    key,
                } => Some(key.clone()),
                _ => None,
            })
            .collect();
        let result = self.inner.write(batch);
        for key in &touched {
            self.invalidate(key);
        }
        result
    }

    fn scan(&self, space: Space, start: &[u8], end: &[u8], limit: usize) -> Result<Rows, Error> {
        self.inner.scan(space, start, end, limit)
    }

    fn flush(&self) -> Result<(), Error> {
        self.inner.flush()
    }

    fn compact(&self, space: Space) -> Result<(), Error> {
        self.inner.compact(space)
    }

    fn sync_mode(&self) -> SyncMode {
        self.inner.sync_mode()
    }

    fn epoch(&self) -> u64 {
        self.inner.epoch()
    }

    fn stats(&self) -> Vec<EngineStat> {
        let mut stats = self.inner.stats();
        stats.extend([
            EngineStat {
                name: "object_cache_hits_total",
                help: "Point reads of user data answered by the object cache.",
                value: self.hits.load(Ordering::Relaxed) as f64,
            },
            EngineStat {
                name: "object_cache_misses_total",
                help: "Point reads of user data that went to the storage engine.",
                value: self.misses.load(Ordering::Relaxed) as f64,
            },
            EngineStat {
                name: "object_cache_bytes",
                help: "Bytes held by the object cache (keys, records, overhead).",
                value: self.cache.weight() as f64,
            },
            EngineStat {
                name: "object_cache_entries",
                help: "Keys held by the object cache (absent keys included).",
                value: self.cache.len() as f64,
            },
        ]);
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryEngine;

    fn put(e: &impl Engine, key: &[u8], value: &[u8]) {
        let mut b = WriteBatch::new();
        b.put(Space::Data, key.to_vec(), value.to_vec());
        drop(e.write(b).expect("write"));
    }

    #[test]
    fn reads_are_served_from_the_cache_and_writes_are_seen() {
        let e = CachedEngine::new(MemoryEngine::new(), 1 << 20);
        assert_eq!(e.get(Space::Data, b"k").expect("get"), None);
        assert_eq!(e.get(Space::Data, b"k").expect("get"), None);
        assert_eq!(e.hits.load(Ordering::Relaxed), 1, "an absent key is cached");
        put(&e, b"k", b"v1");
        assert_eq!(e.get(Space::Data, b"k").expect("get"), Some(b"v1".to_vec()));
        assert_eq!(e.get(Space::Data, b"k").expect("get"), Some(b"v1".to_vec()));
        assert_eq!(e.hits.load(Ordering::Relaxed), 2);
        let mut b = WriteBatch::new();
        b.delete(Space::Data, b"k".to_vec());
        drop(e.write(b).expect("delete"));
        assert_eq!(e.get(Space::Data, b"k").expect("get"), None);
    }

    #[test]
    fn a_failed_write_leaves_no_stale_entry() {
        let e = CachedEngine::new(MemoryEngine::new(), 1 << 20);
        put(&e, b"k", b"v1");
        assert_eq!(e.get(Space::Data, b"k").expect("get"), Some(b"v1".to_vec()));
        e.inner().fail_writes(true);
        let mut b = WriteBatch::new();
        b.put(Space::Data, b"k".to_vec(), b"v2".to_vec());
        assert!(e.write(b).is_err());
        assert_eq!(e.cache.get(b"k".as_slice()), None, "the key was forgotten");
        e.inner().fail_writes(false);
        assert_eq!(e.get(Space::Data, b"k").expect("get"), Some(b"v1".to_vec()));
    }

    #[test]
    fn the_capacity_bounds_the_cache() {
        let e = CachedEngine::new(MemoryEngine::new(), 64 << 10);
        for i in 0..2_000u32 {
            put(&e, &i.to_be_bytes(), &[7u8; 100]);
            e.get(Space::Data, &i.to_be_bytes()).expect("get");
        }
        assert!(e.cache.weight() <= 64 << 10, "{} bytes", e.cache.weight());
        for i in 0..2_000u32 {
            assert_eq!(
                e.get(Space::Data, &i.to_be_bytes()).expect("get"),
                Some(vec![7u8; 100])
            );
        }
    }

    /// A memory engine whose next `get` can be held between reading and returning, and whose
    /// epoch the test sets.
    struct Gated {
        inner: MemoryEngine,
        hold_next_get: std::sync::atomic::AtomicBool,
        read_done: std::sync::Barrier,
        resume: std::sync::Barrier,
        epoch: AtomicU64,
    }

    impl Gated {
        fn new() -> Self {
            Gated {
                inner: MemoryEngine::new(),
                hold_next_get: Default::default(),
                read_done: std::sync::Barrier::new(2),
                resume: std::sync::Barrier::new(2),
                epoch: AtomicU64::new(0),
            }
        }
    }

    impl Engine for Gated {
        fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
            let read = self.inner.get(space, key);
            if self.hold_next_get.swap(false, Ordering::SeqCst) {
                self.read_done.wait();
                self.resume.wait();
            }
            read
        }
        fn write(&self, batch: WriteBatch) -> Result<Durable, Error> {
            self.inner.write(batch)
        }
        fn scan(&self, s: Space, a: &[u8], b: &[u8], l: usize) -> Result<Rows, Error> {
            self.inner.scan(s, a, b, l)
        }
        fn flush(&self) -> Result<(), Error> {
            Ok(())
        }
        fn compact(&self, _: Space) -> Result<(), Error> {
            Ok(())
        }
        fn sync_mode(&self) -> SyncMode {
            SyncMode::None
        }
        fn stats(&self) -> Vec<EngineStat> {
            Vec::new()
        }
        fn epoch(&self) -> u64 {
            self.epoch.load(Ordering::SeqCst)
        }
    }

    /// A reader that read the old record, then lost the race to a write, must not put the old
    /// record into the cache after the write forgot the key.
    #[test]
    fn a_fill_that_lost_the_race_to_a_write_is_dropped() {
        let e = Arc::new(CachedEngine::new(Gated::new(), 1 << 20));
        put(&*e, b"k", b"old");
        e.inner().hold_next_get.store(true, Ordering::SeqCst);
        let reader = {
            let e = e.clone();
            std::thread::spawn(move || e.get(Space::Data, b"k").expect("get"))
        };
        e.inner().read_done.wait(); // the reader holds "old", not yet in the cache
        put(&*e, b"k", b"new");
        e.inner().resume.wait();
        assert_eq!(reader.join().expect("reader"), Some(b"old".to_vec()));
        assert_eq!(
            e.get(Space::Data, b"k").expect("get"),
            Some(b"new".to_vec())
        );
    }

    /// When the inner engine's contents change behind the cache (a reopen that lost writes), a
    /// new epoch empties the cache, and a fill read in the old epoch is dropped.
    #[test]
    fn a_new_epoch_forgets_everything_read_before_it() {
        let e = Arc::new(CachedEngine::new(Gated::new(), 1 << 20));
        put(&*e, b"a", b"shown");
        put(&*e, b"b", b"shown");
        assert_eq!(
            e.get(Space::Data, b"a").expect("get"),
            Some(b"shown".to_vec())
        );
        e.inner().hold_next_get.store(true, Ordering::SeqCst);
        let reader = {
            let e = e.clone();
            std::thread::spawn(move || e.get(Space::Data, b"b").expect("get"))
        };
        e.inner().read_done.wait();
        // The "reopen": both writes are gone from the engine, which says so by its epoch.
        for key in [b"a", b"b"] {
            let mut batch = WriteBatch::new();
            batch.delete(Space::Data, key.to_vec());
            drop(
                e.inner()
                    .inner
                    .write(batch)
                    .expect("delete behind the cache"),
            );
        }
        e.inner().epoch.fetch_add(1, Ordering::SeqCst);
        e.inner().resume.wait();
        assert_eq!(reader.join().expect("reader"), Some(b"shown".to_vec()));
        assert_eq!(e.get(Space::Data, b"a").expect("get"), None);
        assert_eq!(e.get(Space::Data, b"b").expect("get"), None);
    }
}
