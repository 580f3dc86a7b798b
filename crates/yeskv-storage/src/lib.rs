//! # yeskv-storage: where bytes meet the disk
//!
//! The [`Engine`] trait is the only door to storage. It knows nothing of objects or causality:
//! it stores opaque byte records in a few named [`Space`]s (RocksDB column families) and writes
//! batches atomically. Two engines implement it:
//!
//! - [`RocksEngine`] — the product's engine: RocksDB, an LSM tree with a write-ahead log. Its
//!   [`SyncMode`] decides when a write counts as durable (see `docs/operations.md`):
//!   `none` acknowledges once the write is in the WAL in the OS page cache (survives `kill -9`,
//!   not power loss); `group` acknowledges after an fsync of the WAL that covers the write, one
//!   fsync shared by every write that arrived while the previous fsync ran (group commit);
//!   `always` fsyncs the WAL inside each write.
//!   After a write failure (a full disk) it recovers by itself, reopening the database if
//!   RocksDB does not (see `rocks.rs`).
//! - [`MemoryEngine`] — a `BTreeMap` per space, for unit and simulation tests only.
//!
//! [`CachedEngine`] wraps either with an object cache for point reads of user data (`cache.rs`).
//!
//! Compaction may drop data records a [`DataFilter`] names (`filter.rs`: the node's expiry rule);
//! nothing else ever removes a record but a write.
//!
//! Integrity: every record the node stores carries its own CRC32C (see `yeskv_core::codec`), and
//! RocksDB checksums its blocks; a RocksDB corruption error surfaces as [`Error::Corrupt`].

mod cache;
pub mod disk;
mod filter;
mod memory;
#[cfg(feature = "rocksdb")]
mod rocks;

pub use cache::CachedEngine;
pub use filter::{DataFilter, DropPredicate, WallClock};
pub use memory::MemoryEngine;
#[cfg(feature = "rocksdb")]
pub use rocks::{CheckpointReader, RocksConfig, RocksEngine};

use std::sync::Arc;

/// A named keyspace of the engine (a RocksDB column family).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Space {
    /// User data: one record per key, keyed by `yeskv_core::keyspace::storage_key`.
    Data,
    /// The node's own state: actor epoch, shutdown marker, and later the layout.
    Meta,
    /// Hinted writes held for other nodes (sloppy quorum).
    Hints,
}

impl Space {
    /// All spaces, in a fixed order.
    pub const ALL: [Space; 3] = [Space::Data, Space::Meta, Space::Hints];

    /// The column family name.
    pub fn name(self) -> &'static str {
        match self {
            Space::Data => "data",
            Space::Meta => "meta",
            Space::Hints => "hints",
        }
    }
}

/// When a write is acknowledged as durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Fsync the WAL inside every write.
    Always,
    /// Share one WAL fsync among all writes that arrive while the previous one runs.
    #[default]
    Group,
    /// Never fsync before acknowledging: the WAL is in the OS page cache (survives a crash of the
    /// process, not of the machine).
    None,
}

/// Why a text is not a [`SyncMode`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("sync must be \"always\", \"group\" or \"none\", not {0:?}")]
pub struct ParseSyncModeError(String);

impl std::str::FromStr for SyncMode {
    type Err = ParseSyncModeError;
    fn from_str(s: &str) -> Result<Self, ParseSyncModeError> {
        match s {
            "always" => Ok(SyncMode::Always),
            "group" => Ok(SyncMode::Group),
            "none" => Ok(SyncMode::None),
            other => Err(ParseSyncModeError(other.to_string())),
        }
    }
}

impl std::fmt::Display for SyncMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SyncMode::Always => "always",
            SyncMode::Group => "group",
            SyncMode::None => "none",
        })
    }
}

/// What went wrong in storage.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Stored bytes failed a checksum (ours or RocksDB's).
    #[error("corrupt data on disk: {0}")]
    Corrupt(String),
    /// The disk or the filesystem failed (full disk, I/O error). From [`Engine::write`]: the
    /// batch was refused and nothing of it was written.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// A write failed partway: it may or may not have been applied, and may or may not survive
    /// (the first write to meet a full disk, or a failed fsync). Its outcome is unknown.
    #[error("storage write outcome unknown: {0}")]
    Uncertain(String),
    /// The engine is closed or failed permanently (e.g. a WAL fsync failed).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl Error {
    /// Whether a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Io(_) | Error::Uncertain(_))
    }
}

/// One change in a [`WriteBatch`].
#[derive(Clone, Debug)]
pub enum Op {
    /// Set `key` in `space` to `value`.
    Put {
        /// Where.
        space: Space,
        /// Which key.
        key: Vec<u8>,
        /// The new record.
        value: Vec<u8>,
    },
    /// Remove `key` from `space`.
    Delete {
        /// Where.
        space: Space,
        /// Which key.
        key: Vec<u8>,
    },
    /// Remove every key of `space` in `[start, end)` (one range tombstone in RocksDB).
    DeleteRange {
        /// Where.
        space: Space,
        /// First key removed.
        start: Vec<u8>,
        /// First key kept after the range.
        end: Vec<u8>,
    },
}

/// Changes applied atomically by [`Engine::write`].
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    /// The changes, in order.
    pub ops: Vec<Op>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, space: Space, key: Vec<u8>, value: Vec<u8>) -> &mut Self {
        self.ops.push(Op::Put { space, key, value });
        self
    }

    /// Adds the removal of every key of `space` in `[start, end)`.
    pub fn delete_range(&mut self, space: Space, start: Vec<u8>, end: Vec<u8>) -> &mut Self {
        self.ops.push(Op::DeleteRange { space, start, end });
        self
    }

    /// Removes `key` from `space`.
    pub fn delete(&mut self, space: Space, key: Vec<u8>) -> &mut Self {
        self.ops.push(Op::Delete { space, key });
        self
    }
}

/// A write that has been applied; await [`Durable::wait`] before acknowledging it.
#[must_use = "a write is not durable until Durable::wait returns"]
pub struct Durable {
    pending: Pending,
}

/// What a [`Durable`] still waits for.
enum Pending {
    /// Nothing: already durable.
    Done,
    /// The group committer's fsync covering a write (RocksDB's `group` sync mode).
    #[cfg(feature = "rocksdb")]
    Group(rocks::GroupPending),
    /// An engine-defined completion (the simulator's disk model).
    Deferred(DurableFuture),
}

/// The completion of a write in an engine outside this crate: resolves when the write is durable.
pub type DurableFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + Send + 'static>>;

impl Durable {
    /// Already durable (memory engine, `none` and `always` modes).
    pub fn done() -> Self {
        Durable {
            pending: Pending::Done,
        }
    }

    /// Durable when `completion` resolves (an error: [`Error::Uncertain`]). For engines outside
    /// this crate, e.g. the deterministic simulator's disk, which makes writes durable after a
    /// simulated fsync delay and loses the rest on a simulated crash.
    pub fn deferred(completion: DurableFuture) -> Self {
        Durable {
            pending: Pending::Deferred(completion),
        }
    }

    /// Waits until the write is as durable as the engine's sync mode promises. The write was
    /// applied, so a failure here leaves its outcome unknown: [`Error::Uncertain`].
    pub async fn wait(self) -> Result<(), Error> {
        match self.pending {
            Pending::Done => Ok(()),
            Pending::Deferred(completion) => completion.await,
            #[cfg(feature = "rocksdb")]
            Pending::Group(group) => group.wait().await,
        }
    }
}

/// Key-value pairs returned by [`Engine::scan`].
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// A named figure of the engine, exported to `/metrics`.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineStat {
    /// Metric name suffix (e.g. `memtable_bytes`).
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// Current value.
    pub value: f64,
}

/// The storage interface of a node (see the crate docs).
pub trait Engine: Send + Sync + 'static {
    /// Reads one record.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;

    /// Applies a batch atomically. The batch is visible to reads when this returns; it is durable
    /// (per [`SyncMode`]) when the returned [`Durable`] resolves. In `always` mode this call
    /// itself blocks on an fsync.
    fn write(&self, batch: WriteBatch) -> Result<Durable, Error>;

    /// Records with `start <= key < end`, in key order, at most `limit`.
    fn scan(&self, space: Space, start: &[u8], end: &[u8], limit: usize) -> Result<Rows, Error>;

    /// Makes everything written so far durable and flushes memtables (used at shutdown).
    fn flush(&self) -> Result<(), Error>;

    /// Compacts a whole space now (for operators and tests).
    fn compact(&self, space: Space) -> Result<(), Error>;

    /// Compacts the keys of `space` in `[start, end)` now, so that the space a range delete
    /// freed is given back to the disk. Engines without files have nothing to do.
    fn compact_range(&self, space: Space, start: &[u8], end: &[u8]) -> Result<(), Error> {
        let _ = (space, start, end);
        Ok(())
    }

    /// Writes a consistent point-in-time copy of the whole database (every space, every write
    /// acknowledged before the call) into `dir`, which must not exist yet. On the database's
    /// own filesystem the copy's files are hard links: quick, and no extra space until
    /// compaction rewrites the originals. Engines that keep no files refuse.
    fn checkpoint(&self, dir: &std::path::Path) -> Result<(), Error> {
        let _ = dir;
        Err(Error::Unavailable(
            "this engine keeps no files to take a checkpoint of".into(),
        ))
    }

    /// Bytes of the data space that compaction would keep (RocksDB's estimate of its live data,
    /// memtables included); `None` where the engine cannot tell cheaply.
    fn live_data_bytes(&self) -> Option<u64> {
        None
    }

    /// How writes become durable.
    fn sync_mode(&self) -> SyncMode;

    /// Engine figures for `/metrics`.
    fn stats(&self) -> Vec<EngineStat>;

    /// The disk under the engine, for `/v1/status` and `/metrics`; `None` for an engine that
    /// keeps no files.
    fn disk(&self) -> Option<DiskStatus> {
        None
    }

    /// Changes whenever the stored contents may have changed other than by [`Engine::write`]
    /// (RocksDB reopened after a write failure may have lost writes it had served), so that a
    /// cache in front of the engine knows to forget what it holds. No default: an engine that
    /// forgot it would silently serve stale records through [`CachedEngine`].
    fn epoch(&self) -> u64;
}

impl<E: Engine + ?Sized> Engine for Arc<E> {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        (**self).get(space, key)
    }
    fn write(&self, batch: WriteBatch) -> Result<Durable, Error> {
        (**self).write(batch)
    }
    fn scan(&self, space: Space, start: &[u8], end: &[u8], limit: usize) -> Result<Rows, Error> {
        (**self).scan(space, start, end, limit)
    }
    fn flush(&self) -> Result<(), Error> {
        (**self).flush()
    }
    fn compact(&self, space: Space) -> Result<(), Error> {
        (**self).compact(space)
    }
    fn compact_range(&self, space: Space, start: &[u8], end: &[u8]) -> Result<(), Error> {
        (**self).compact_range(space, start, end)
    }
    fn checkpoint(&self, dir: &std::path::Path) -> Result<(), Error> {
        (**self).checkpoint(dir)
    }
    fn live_data_bytes(&self) -> Option<u64> {
        (**self).live_data_bytes()
    }
    fn sync_mode(&self) -> SyncMode {
        (**self).sync_mode()
    }
    fn stats(&self) -> Vec<EngineStat> {
        (**self).stats()
    }
    fn epoch(&self) -> u64 {
        (**self).epoch()
    }
    fn disk(&self) -> Option<DiskStatus> {
        (**self).disk()
    }
}

/// The disk under an engine, as [`Engine::disk`] reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskStatus {
    /// The database directory.
    pub path: std::path::PathBuf,
    /// Size of its filesystem.
    pub total_bytes: u64,
    /// What is still free there (for an unprivileged process).
    pub free_bytes: u64,
    /// What the database's files take, by kind.
    pub usage: disk::Usage,
    /// What the reserve file holds now (`storage.reserve_mb`; 0 while released).
    pub reserve_bytes: u64,
    /// Whether writes are taken: false while the database is open read-only (it could not open
    /// for writing, the disk being full) or its writes fail.
    pub writable: bool,
    /// Why writes fail, while they do.
    pub error: Option<String>,
}
