//! The compaction filter hook: which records of [`Space::Data`](crate::Space::Data) an engine
//! drops when it compacts.
//!
//! The storage crate knows nothing of objects, so the node hands the engine a [`DataFilter`]: a
//! predicate over `(storage key, record, now_ms)` and the wall clock it is judged by (the node's
//! own, so that a test or the simulator can move it). The node's predicate is its expiry rule
//! (`yeskv-node/src/expiry.rs`): a record whose object is expiring and expired for longer than a
//! grace is dropped, whatever else the record holds is kept — and so is a record the predicate
//! cannot read, so that the read path reports the damage.
//!
//! [`RocksEngine`](crate::RocksEngine) installs it as a RocksDB compaction filter *factory* on the
//! data column family: each compaction gets its own filter, which reads the clock once when the
//! compaction starts (the decisions of one compaction are made at one instant, and the clock is
//! not read per record). A record the filter removes becomes a deletion in that compaction's
//! output (RocksDB turns a removed entry into a tombstone until the bottommost level), so an older
//! version of the key in a lower level cannot show through. Records are only ever dropped by
//! compactions: natural ones as the data grows, the node's expiry compactions, a periodic
//! compaction of files older than [`RocksConfig::periodic_compaction_secs`](crate::RocksConfig),
//! and `POST /v1/admin/compact`.
//!
//! [`MemoryEngine`](crate::MemoryEngine) applies the same filter when it is asked to compact
//! (`compact`, `compact_range`), so unit tests and the simulator go through the same rule.

use std::sync::Arc;

/// Decides whether the record `(storage key, record)` of the data space is dropped at `now_ms`.
pub type DropPredicate = dyn Fn(&[u8], &[u8], u64) -> bool + Send + Sync;

/// The wall clock a [`DataFilter`] judges by, in ms since the Unix epoch.
pub type WallClock = dyn Fn() -> u64 + Send + Sync;

/// What compaction drops from the data space, and by which clock (see the module docs).
#[derive(Clone)]
pub struct DataFilter {
    drop: Arc<DropPredicate>,
    clock: Arc<WallClock>,
}

impl DataFilter {
    /// A filter that drops the records `drop` names at the time `clock` tells.
    pub fn new(
        drop: impl Fn(&[u8], &[u8], u64) -> bool + Send + Sync + 'static,
        clock: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        DataFilter {
            drop: Arc::new(drop),
            clock: Arc::new(clock),
        }
    }

    /// Now, by the filter's clock.
    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// Whether the record goes, at `now_ms`.
    pub fn drops(&self, key: &[u8], record: &[u8], now_ms: u64) -> bool {
        (self.drop)(key, record, now_ms)
    }
}

impl std::fmt::Debug for DataFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataFilter").finish_non_exhaustive()
    }
}
