//! # The object cache: point reads of user data without the LSM
//!
//! [`CachedEngine`] wraps an [`Engine`] and keeps recently read or written records of [`Space::Data`] in
//! memory (a weight-bounded S3-FIFO cache, `quick_cache`), absent keys included. Every read of
//! a user key goes through it — a client's read, and the read-before-write of every write — so
//! a hit skips RocksDB's memtable and SST lookups, which were the largest single cost of a
//! node under a read-heavy load (see `docs/performance.md`). Cassandra's row cache plays the
//! same part.
//!
//! Correctness rests on three rules, none of which trusts the caller to serialise anything:
//! - Each of [`STRIPES`] stripes counts the writes begun on its keys and those in flight (so
//!   also the writes done). Before the inner engine applies a batch, the write enters the stripe
//!   of every data key it touches; after, it leaves the stripe under the stripe's lock and then
//!   either caches the record it wrote — only if the engine applied it, no other write
//!   of the stripe was in flight when it began or began since (so the engine holds exactly that
//!   record now), and the epoch (below) did not change — or *removes* the key (failed, of
//!   unknown outcome, overlapped). Two racing writers therefore leave no entry behind whatever
//!   their order, and a lone read-modify-write (a cart) leaves its result for the next read.
//! - A read fills the cache only if, under the stripe's lock, no write is in flight on the stripe
//!   and the count of writes done is the one it saw before reading. A reader that read the old record can never
//!   insert it during or after a write of the key; and while a write is in flight, readers either
//!   all hit the entry cached before it (the old record: the write has not taken effect for point
//!   reads yet) or all read the engine, which is linearizable — never the new record and then the
//!   old one.
//! - The inner engine's [`Engine::epoch`] changes when its contents may have changed other than
//!   by a write (RocksDB reopened after a write failure may have lost writes it had shown): a
//!   read that sees a new epoch empties the cache first, and a fill is refused unless the epoch
//!   is still the one seen before reading (checked under a gate that emptying holds alone).
//!
//! Point reads see one key at a time: while a batch of several data keys is in flight, one may
//! read as written and another as before (no node batch writes two data keys). Scans bypass the
//! cache, so an anti-entropy scan may see a write in flight that point reads do not yet.
//!
//! Records are cached as the engine stored them (checksummed bytes): callers verify and decode
//! them as they would a record read from disk. A record cached before its copy on disk went bad
//! is served from memory until evicted; the disk's corruption shows at the next miss, and
//! anti-entropy scans (which bypass the cache) count it meanwhile. Scans, hints and metadata
//! bypass the cache.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use quick_cache::sync::Cache;
use quick_cache::Weighter;

use crate::{Durable, Engine, EngineStat, Error, Op, Rows, Space, SyncMode, WriteBatch};

/// Stripes of fill/write coordination (see the module docs). A collision only costs a fill.
pub const STRIPES: usize = 1024;

/// Bytes counted per entry beyond its key and value: the key's and the record's allocations
/// with their rounding, the `Arc` header, the cache's entry and its hash-table slot.
const ENTRY_OVERHEAD: u64 = 128;

/// A cached lookup: the stored record, or `None` for a key known to be absent.
type Cached = Option<Arc<[u8]>>;

#[derive(Clone)]
struct ByBytes;

impl Weighter<Vec<u8>, Cached> for ByBytes {
    fn weight(&self, key: &Vec<u8>, val: &Cached) -> u64 {
        key.len() as u64 + val.as_ref().map_or(0, |v| v.len() as u64) + ENTRY_OVERHEAD
    }
}

/// What a stripe knows of the writes to its keys (see the module docs).
#[derive(Default)]
struct Stripe {
    /// Writes to a key of the stripe begun so far.
    begun: u64,
    /// Of those, the ones applying right now.
    writing: u32,
}

impl Stripe {
    /// Writes to a key of the stripe done so far (what a fill compares).
    fn ended(&self) -> u64 {
        self.begun.wrapping_sub(u64::from(self.writing))
    }
}

/// One data key of a write in flight.
struct KeyWrite {
    key: Vec<u8>,
    /// The key's stripe.
    stripe: usize,
    /// What the write stores for it (`None`: a delete).
    record: Cached,
    /// `Some(begun)` if no other write of the stripe was in flight when this one began.
    alone_since: Option<u64>,
}

/// An [`Engine`] with an object cache in front of its point reads of [`Space::Data`].
pub struct CachedEngine<E> {
    inner: E,
    cache: Cache<Vec<u8>, Cached, ByBytes>,
    /// Per stripe: writes begun and in flight on its keys.
    stripes: Box<[Mutex<Stripe>]>,
    /// The epoch the cached entries were read in: the inner engine's, plus [`Self::ranges`].
    epoch: AtomicU64,
    /// Bumped before and after every range delete of user data (see [`Self::stamp`]).
    ranges: AtomicU64,
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
            ranges: AtomicU64::new(0),
            fill_gate: RwLock::new(()),
            inner,
            cache: Cache::with_weighter(estimated_items, capacity_bytes, ByBytes),
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
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
        let now = self.stamp();
        if self.epoch.load(Ordering::Acquire) != now {
            let _alone = self.fill_gate.write();
            self.cache.clear();
            self.epoch.store(now, Ordering::Release);
        }
        now
    }

    /// Whether the cache and the inner engine are both still in `epoch` (a fill or a write's
    /// record from `epoch` may go into the cache; call with the fill gate held).
    fn epoch_holds(&self, epoch: u64) -> bool {
        self.stamp() == epoch && self.epoch.load(Ordering::Acquire) == epoch
    }

    /// The cache's epoch: the inner engine's, moved on by every range delete of user data. A
    /// range delete changes many keys at once, none of which a stripe tracks, so it is treated
    /// as the inner engine changing behind the cache: the count is bumped before the delete
    /// (every write and fill begun before it will not cache its record) and after it (nor will
    /// those begun while it applied), and the cache is emptied.
    fn stamp(&self) -> u64 {
        self.inner
            .epoch()
            .wrapping_add(self.ranges.load(Ordering::Acquire))
    }

    /// A write of `key` (record `record`) begins: no fill of its stripe until it ends.
    fn begin_write(&self, key: &[u8], record: Cached) -> KeyWrite {
        let index = Self::stripe(key);
        let mut stripe = self.stripes[index].lock();
        let alone = stripe.writing == 0;
        stripe.writing += 1;
        stripe.begun = stripe.begun.wrapping_add(1);
        KeyWrite {
            key: key.to_vec(),
            stripe: index,
            record,
            alone_since: alone.then_some(stripe.begun),
        }
    }

    /// A write ended. If it was applied, in the epoch it began in, and no other write of the
    /// stripe overlapped it, the engine now holds exactly its record: cache that. Otherwise
    /// (failed, of unknown outcome, overlapped, or a new epoch) forget the key.
    fn end_write(&self, write: KeyWrite, applied_in: Option<u64>) {
        let _shared = self.fill_gate.read();
        let mut stripe = self.stripes[write.stripe].lock();
        stripe.writing -= 1;
        let alone_throughout = write.alone_since == Some(stripe.begun);
        match applied_in {
            Some(epoch) if alone_throughout && self.epoch_holds(epoch) => {
                self.cache.insert(write.key, write.record);
            }
            _ => {
                self.cache.remove(&write.key);
            }
        }
    }
}

/// Ends the writes of a batch however the inner write returns (a panic included), so that a
/// stripe never stays closed to fills.
struct WritesInFlight<'a, E: Engine> {
    cache: &'a CachedEngine<E>,
    writes: Vec<KeyWrite>,
    /// The epoch the batch began in.
    epoch: u64,
    /// The inner engine applied the batch.
    applied: bool,
}

impl<E: Engine> Drop for WritesInFlight<'_, E> {
    fn drop(&mut self) {
        let applied_in = self.applied.then_some(self.epoch);
        for write in self.writes.drain(..) {
            self.cache.end_write(write, applied_in);
        }
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
        let stripe = &self.stripes[Self::stripe(key)];
        let seen = stripe.lock().ended();
        let read = self.inner.get(space, key)?;
        let _shared = self.fill_gate.read();
        let now = stripe.lock();
        if now.writing == 0 && now.ended() == seen && self.epoch_holds(epoch) {
            self.cache
                .insert(key.to_vec(), read.as_deref().map(Arc::from));
        }
        drop(now);
        Ok(read)
    }

    fn write(&self, batch: WriteBatch) -> Result<Durable, Error> {
        let range_delete = batch.ops.iter().any(|op| {
            matches!(
                op,
                Op::DeleteRange {
                    space: Space::Data,
                    ..
                }
            )
        });
        if range_delete {
            self.ranges.fetch_add(1, Ordering::AcqRel);
            self.current_epoch();
            let written = self.inner.write(batch);
            self.ranges.fetch_add(1, Ordering::AcqRel);
            self.current_epoch();
            return written;
        }
        let epoch = self.current_epoch();
        let writes = batch
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Put {
                    space: Space::Data,
                    key,
                    value,
                } => Some((key, Some(Arc::from(value.as_slice())))),
                Op::Delete {
                    space: Space::Data,
                    key,
                } => Some((key, None)),
                _ => None,
            })
            .map(|(key, record)| self.begin_write(key, record))
            .collect();
        let mut in_flight = WritesInFlight {
            cache: self,
            writes,
            epoch,
            applied: false,
        };
        let written = self.inner.write(batch);
        in_flight.applied = written.is_ok();
        written
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

    fn compact_range(&self, space: Space, start: &[u8], end: &[u8]) -> Result<(), Error> {
        self.inner.compact_range(space, start, end)
    }

    fn checkpoint(&self, dir: &std::path::Path) -> Result<(), Error> {
        self.inner.checkpoint(dir)
    }

    fn live_data_bytes(&self) -> Option<u64> {
        self.inner.live_data_bytes()
    }

    fn sync_mode(&self) -> SyncMode {
        self.inner.sync_mode()
    }

    fn epoch(&self) -> u64 {
        self.inner.epoch()
    }

    fn disk(&self) -> Option<crate::DiskStatus> {
        self.inner.disk()
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

    fn read(e: &impl Engine, key: &[u8]) -> Option<Vec<u8>> {
        e.get(Space::Data, key).expect("get")
    }

    fn put(e: &impl Engine, key: &[u8], value: &[u8]) {
        let mut b = WriteBatch::new();
        b.put(Space::Data, key.to_vec(), value.to_vec());
        drop(e.write(b).expect("write"));
    }

    #[test]
    fn reads_are_served_from_the_cache_and_writes_are_seen() {
        let e = CachedEngine::new(MemoryEngine::new(), 1 << 20);
        assert_eq!(read(&e, b"k"), None);
        assert_eq!(read(&e, b"k"), None);
        assert_eq!(e.hits.load(Ordering::Relaxed), 1, "an absent key is cached");
        put(&e, b"k", b"v1");
        assert_eq!(read(&e, b"k"), Some(b"v1".to_vec()));
        assert_eq!(read(&e, b"k"), Some(b"v1".to_vec()));
        assert_eq!(
            e.hits.load(Ordering::Relaxed),
            3,
            "a lone write caches its record"
        );
        assert_eq!(e.misses.load(Ordering::Relaxed), 1);
        let mut b = WriteBatch::new();
        b.delete(Space::Data, b"k".to_vec());
        drop(e.write(b).expect("delete"));
        assert_eq!(read(&e, b"k"), None);
    }

    #[test]
    fn a_range_delete_forgets_the_cached_keys_it_removed() {
        let e = CachedEngine::new(MemoryEngine::new(), 1 << 20);
        for k in [b"a1", b"b1", b"b2", b"c1"] {
            put(&e, k, b"v");
            assert_eq!(read(&e, k), Some(b"v".to_vec()));
        }
        let mut b = WriteBatch::new();
        b.delete_range(Space::Data, b"b".to_vec(), b"c".to_vec());
        drop(e.write(b).expect("range delete"));
        assert_eq!(read(&e, b"a1"), Some(b"v".to_vec()));
        assert_eq!(read(&e, b"b1"), None, "removed by the range delete");
        assert_eq!(read(&e, b"b2"), None);
        assert_eq!(read(&e, b"c1"), Some(b"v".to_vec()), "the end is kept");
    }

    #[test]
    fn a_failed_write_leaves_no_stale_entry() {
        let e = CachedEngine::new(MemoryEngine::new(), 1 << 20);
        put(&e, b"k", b"v1");
        assert_eq!(read(&e, b"k"), Some(b"v1".to_vec()));
        e.inner().fail_writes(true);
        let mut b = WriteBatch::new();
        b.put(Space::Data, b"k".to_vec(), b"v2".to_vec());
        assert!(e.write(b).is_err());
        assert_eq!(e.cache.get(b"k".as_slice()), None, "the key was forgotten");
        e.inner().fail_writes(false);
        assert_eq!(read(&e, b"k"), Some(b"v1".to_vec()));
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

    /// A memory engine whose next `get` can be held between reading and returning, whose next
    /// `write` can be held before or after applying, and whose epoch the test sets.
    struct Gated {
        inner: MemoryEngine,
        hold_next_get: std::sync::atomic::AtomicBool,
        /// 0: no; 1: hold the next write before applying it; 2: after.
        hold_next_write: std::sync::atomic::AtomicU8,
        get_held: std::sync::Barrier,
        get_resume: std::sync::Barrier,
        write_held: std::sync::Barrier,
        write_resume: std::sync::Barrier,
        epoch: AtomicU64,
    }

    const BEFORE_APPLYING: u8 = 1;
    const AFTER_APPLYING: u8 = 2;

    impl Gated {
        fn new() -> Self {
            Gated {
                inner: MemoryEngine::new(),
                hold_next_get: Default::default(),
                hold_next_write: Default::default(),
                get_held: std::sync::Barrier::new(2),
                get_resume: std::sync::Barrier::new(2),
                write_held: std::sync::Barrier::new(2),
                write_resume: std::sync::Barrier::new(2),
                epoch: AtomicU64::new(0),
            }
        }
    }

    impl Engine for Gated {
        fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
            let read = self.inner.get(space, key);
            if self.hold_next_get.swap(false, Ordering::SeqCst) {
                self.get_held.wait();
                self.get_resume.wait();
            }
            read
        }
        fn write(&self, batch: WriteBatch) -> Result<Durable, Error> {
            let hold = self.hold_next_write.swap(0, Ordering::SeqCst);
            if hold == BEFORE_APPLYING {
                self.write_held.wait();
                self.write_resume.wait();
            }
            let written = self.inner.write(batch);
            if hold == AFTER_APPLYING {
                self.write_held.wait();
                self.write_resume.wait();
            }
            written
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

    /// Writes straight into the engine under the cache, as if written before the cache saw it.
    fn behind(e: &CachedEngine<Gated>, key: &[u8], value: &[u8]) {
        put(&e.inner().inner, key, value);
    }

    /// Starts a `get` of `key` on another thread and returns once it has read the engine but
    /// not yet filled the cache.
    fn held_get(e: &Arc<CachedEngine<Gated>>, key: &'static [u8]) -> JoinHandle {
        e.inner().hold_next_get.store(true, Ordering::SeqCst);
        let reader = {
            let e = e.clone();
            std::thread::spawn(move || read(&e, key))
        };
        e.inner().get_held.wait();
        reader
    }

    /// Starts a put of `key` on another thread, held inside the engine at `point`.
    fn held_put(
        e: &Arc<CachedEngine<Gated>>,
        key: &'static [u8],
        value: &'static [u8],
        point: u8,
    ) -> std::thread::JoinHandle<()> {
        e.inner().hold_next_write.store(point, Ordering::SeqCst);
        let writer = {
            let e = e.clone();
            std::thread::spawn(move || put(&*e, key, value))
        };
        e.inner().write_held.wait();
        writer
    }

    type JoinHandle = std::thread::JoinHandle<Option<Vec<u8>>>;

    /// A reader that read the old record, then lost the race to a write, must not put the old
    /// record into the cache after the write forgot the key.
    #[test]
    fn a_fill_that_lost_the_race_to_a_write_is_dropped() {
        let e = Arc::new(CachedEngine::new(Gated::new(), 1 << 20));
        behind(&e, b"k", b"old");
        let reader = held_get(&e, b"k"); // holds "old", not yet in the cache
        put(&*e, b"k", b"new");
        e.inner().get_resume.wait();
        assert_eq!(reader.join().expect("reader"), Some(b"old".to_vec()));
        assert_eq!(read(&e, b"k"), Some(b"new".to_vec()));
    }

    /// While a write is applied, no reader fills: a reader that read the record the write
    /// replaces cannot put it back after another reader saw the new one.
    #[test]
    fn no_fill_while_a_write_is_in_flight() {
        let e = Arc::new(CachedEngine::new(Gated::new(), 1 << 20));
        behind(&e, b"k", b"old");
        let slow = held_get(&e, b"k"); // read "old" before the write applies
        let writer = held_put(&e, b"k", b"new", AFTER_APPLYING);
        // Applied but not returned: a reader sees the new record on the engine...
        assert_eq!(read(&e, b"k"), Some(b"new".to_vec()));
        e.inner().get_resume.wait(); // ...and the slow reader tries to fill with "old".
        assert_eq!(slow.join().expect("slow"), Some(b"old".to_vec()));
        assert_eq!(
            read(&e, b"k"),
            Some(b"new".to_vec()),
            "the new record was seen, then the old one"
        );
        e.inner().write_resume.wait();
        writer.join().expect("writer");
        assert_eq!(read(&e, b"k"), Some(b"new".to_vec()));
    }

    /// A reader between a write's start and its apply reads the old record; it must not be
    /// cached past the write.
    #[test]
    fn a_read_before_the_write_applies_is_not_cached_past_it() {
        let e = Arc::new(CachedEngine::new(Gated::new(), 1 << 20));
        behind(&e, b"k", b"old");
        let writer = held_put(&e, b"k", b"new", BEFORE_APPLYING);
        assert_eq!(read(&e, b"k"), Some(b"old".to_vec()));
        e.inner().write_resume.wait();
        writer.join().expect("writer");
        assert_eq!(read(&e, b"k"), Some(b"new".to_vec()));
    }

    /// When the inner engine's contents change behind the cache (a reopen that lost writes), a
    /// new epoch empties the cache, and a fill read in the old epoch is dropped even when it
    /// comes after the cache was emptied.
    #[test]
    fn a_new_epoch_forgets_everything_read_before_it() {
        let e = Arc::new(CachedEngine::new(Gated::new(), 1 << 20));
        put(&*e, b"a", b"shown");
        behind(&e, b"b", b"shown");
        assert_eq!(read(&e, b"a"), Some(b"shown".to_vec()));
        let reader = held_get(&e, b"b");
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
        // The cache notices the new epoch (and empties) before the held fill arrives.
        assert_eq!(read(&e, b"a"), None);
        e.inner().get_resume.wait();
        assert_eq!(reader.join().expect("reader"), Some(b"shown".to_vec()));
        assert_eq!(read(&e, b"b"), None);
    }

    /// Two writes of one stripe overlap: neither may cache its record, since the engine's order
    /// of the two is unknown to the cache.
    #[test]
    fn overlapping_writes_cache_nothing() {
        let e = Arc::new(CachedEngine::new(Gated::new(), 1 << 20));
        let first = held_put(&e, b"k", b"v1", AFTER_APPLYING);
        put(&*e, b"k", b"v2"); // begins and ends while the first is in flight
        e.inner().write_resume.wait();
        first.join().expect("first");
        assert_eq!(read(&e, b"k"), Some(b"v2".to_vec()));
    }

    /// A write that spans a new epoch (a reopen that may have lost it) caches nothing.
    #[test]
    fn a_write_across_a_new_epoch_caches_nothing() {
        let e = Arc::new(CachedEngine::new(Gated::new(), 1 << 20));
        let writer = held_put(&e, b"k", b"lost", AFTER_APPLYING);
        let mut batch = WriteBatch::new();
        batch.delete(Space::Data, b"k".to_vec());
        drop(e.inner().inner.write(batch).expect("the reopen loses it"));
        e.inner().epoch.fetch_add(1, Ordering::SeqCst);
        // The cache sees the new epoch (and empties) before the write ends.
        assert_eq!(read(&e, b"other"), None);
        e.inner().write_resume.wait();
        writer.join().expect("writer");
        assert_eq!(read(&e, b"k"), None);
    }
}
