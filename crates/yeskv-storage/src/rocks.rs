//! The RocksDB engine: the product's storage.
//!
//! One RocksDB instance per node with a column family per [`Space`]. Durability follows the
//! configured [`SyncMode`]; `group` mode runs a *group commit* thread: writers append to the WAL
//! without syncing, take a sequence number, and wait until the committer has fsynced past it. The
//! committer loops "take the highest sequence written, fsync the WAL, publish it", so however
//! many writes arrive during one fsync, they share the next one. Under concurrent load (the last
//! fsync carried several writes) it first gathers: it waits until as many writes wait as the
//! last fsync carried, or `group_commit_window_us` at most, so the batch follows the load and
//! a lone writer (last batch of one) is never delayed.
//!
//! **Recovery from write failures** (a full disk, an I/O error). Once RocksDB fails to append
//! to or sync its WAL it may keep the error ("Writer has previous error") and refuse every later
//! write although the disk has room again; rust-rocksdb has no `DB::Resume()`. So a *doctor*
//! thread watches: after the first failed write it probes with a small synced write every
//! [`PROBE_INTERVAL`]; if RocksDB has not recovered by itself within [`RESUME_GRACE`] and the
//! filesystem has room for the reopen ([`reopen_space_needed`]), it closes and reopens the
//! database (WAL replay recovers every write RocksDB accepted). Reads keep being served by the
//! failing database until the reopen; writes fail meanwhile: the first with
//! [`Error::Uncertain`] (it may have reached the WAL, partway or whole), later ones, refused
//! before the WAL, with [`Error::Io`] — a caller may then apply the write elsewhere. Writes waiting
//! for a group fsync that failed, or that were pending when the database was reopened, fail
//! (their outcome is unknown to the caller, never reported as durable): a *generation* number
//! taken before each write changes at every such failure.
//!
//! **Starting on a full disk.** Opening writes (a new MANIFEST, OPTIONS file and WAL), so a
//! database on a full disk may not open for writing. The engine then deletes its reserve file
//! (`disk.rs`) and tries again; if it still cannot, it opens the database *read-only* (RocksDB
//! replays the WAL into memory and writes nothing): reads are served, writes fail with an I/O
//! error that names the disk, and the doctor reopens the database for writing once the disk has
//! room. The node never exits in a restart loop because its disk filled up. While healthy, the
//! doctor puts the reserve back whenever the disk has room for it.
//!
//! **Dropping expired records.** With a [`RocksConfig::data_filter`], every compaction of the
//! data column family asks the node's predicate about each record it rewrites and drops those
//! it names (`filter.rs`). A periodic compaction ([`RocksConfig::periodic_compaction_secs`])
//! makes sure old files are looked at even when no write would compact them.
//!
//! **Bounded disk use.** RocksDB's defaults let a small database take far more disk than its
//! data: each WAL file was preallocated (`fallocate`) by 1.1 x the memtable size, ahead of any
//! data, and old WAL files live until every column family that wrote to them has flushed, up
//! to `max_total_wal_size`, by default 4 x the memtables of every family (hundreds of MiB to
//! GiB). Here preallocation is off (`allow_fallocate = false`), the WAL is bounded by
//! [`RocksConfig::wal_bytes_max`] (past it RocksDB flushes the families holding the oldest WAL),
//! the info log rolls at 4 MiB with 4 kept, and recovery after a crash replays the WAL without
//! writing tables first (`avoid_flush_during_recovery`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex, RwLock};
use rocksdb::compaction_filter::{CompactionFilter, Decision as CompactionDecision};
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Options, WriteOptions, DB,
};

use crate::disk::{self, free_bytes};
use crate::filter::DataFilter;
use crate::{DiskStatus, Durable, Engine, EngineStat, Error, Op, Space, SyncMode, WriteBatch};

/// Wall-clock now in ms since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How often the doctor probes a failing database.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// How long RocksDB gets to recover from a write failure by itself before a reopen.
const RESUME_GRACE: Duration = Duration::from_secs(2);
/// Free space kept beyond what a reopen writes (manifest, info log, options file).
const REOPEN_MARGIN_BYTES: u64 = 8 << 20;
/// How often the doctor looks at the disk while writes succeed (to put the reserve back).
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(5);
/// Options RocksDB's C API cannot set one by one (see the module docs).
const DB_OPTIONS: &str = "allow_fallocate=false;avoid_flush_during_recovery=true";
/// Size at which RocksDB's info log rolls over.
const INFO_LOG_BYTES_MAX: usize = 4 << 20;
/// The Meta key the doctor's probe writes.
const PROBE_KEY: &[u8] = b"engine.probe";

/// Settings of the RocksDB engine.
#[derive(Clone, Debug)]
pub struct RocksConfig {
    /// Directory of the database (created if missing).
    pub path: PathBuf,
    /// When writes are durable.
    pub sync: SyncMode,
    /// Block cache size in MiB.
    pub block_cache_mb: usize,
    /// Memtable size in MiB (per column family).
    pub write_buffer_mb: usize,
    /// In `group` mode, how long the committer waits for more writes before an fsync when the
    /// previous fsync carried more than one write (0 = never wait).
    pub group_commit_window_us: u64,
    /// Bytes the reserve file keeps for a reopen on a full disk (0 = no reserve).
    pub reserve_bytes: u64,
    /// What compactions of the data column family drop (`None`: nothing; see `filter.rs`).
    pub data_filter: Option<DataFilter>,
    /// Data files older than this are compacted again (RocksDB's
    /// `periodic_compaction_seconds`), so that a [`RocksConfig::data_filter`] sees every record
    /// within this time even when nothing else compacts them; 0 leaves RocksDB's default.
    pub periodic_compaction_secs: u64,
}

impl RocksConfig {
    /// Defaults for a database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RocksConfig {
            path: path.into(),
            sync: SyncMode::default(),
            block_cache_mb: 256,
            write_buffer_mb: 64,
            group_commit_window_us: 1000,
            reserve_bytes: 0,
            data_filter: None,
            periodic_compaction_secs: 0,
        }
    }

    fn write_buffer_bytes(&self) -> u64 {
        (self.write_buffer_mb.max(1) as u64) << 20
    }

    /// Most bytes of WAL kept: four memtables' worth (module docs).
    pub fn wal_bytes_max(&self) -> u64 {
        self.write_buffer_bytes() * 4
    }
}

/// Published by the group committer.
#[derive(Clone, Debug, Default)]
pub(crate) struct SyncedState {
    /// Every write with a sequence number up to this one is durable.
    pub(crate) synced: u64,
    /// Changes whenever writes may have been lost: a failed fsync, a reopen. A write that took
    /// generation `g` before it was applied is acknowledged only if `synced` covers it while
    /// the generation is still `g`.
    pub(crate) generation: u64,
    /// Why the generation last changed.
    pub(crate) failed: Option<String>,
}

/// A write waiting for the group committer's fsync that covers write `seq`, in the generation
/// the write was applied in (see [`SyncedState`]).
pub(crate) struct GroupPending {
    seq: u64,
    generation: u64,
    rx: tokio::sync::watch::Receiver<SyncedState>,
}

impl GroupPending {
    /// Waits for the fsync; [`Error::Uncertain`] if the generation changed first.
    pub(crate) async fn wait(mut self) -> Result<(), Error> {
        let (seq, generation) = (self.seq, self.generation);
        let state = self
            .rx
            .wait_for(|s| s.synced >= seq || s.generation != generation)
            .await
            .map_err(|_| Error::Uncertain("group commit stopped".into()))?;
        if state.generation == generation {
            return Ok(());
        }
        Err(Error::Uncertain(format!(
            "the write may not be durable: {}",
            state.failed.as_deref().unwrap_or("storage failed")
        )))
    }
}

struct GroupCommit {
    written: AtomicU64,
    /// Set while the committer waits for work: only then does a writer need to wake it.
    idle: AtomicBool,
    wake: Mutex<()>,
    cond: Condvar,
    /// The longest the committer waits for more writes before an fsync (module docs).
    window: Duration,
    /// While the committer gathers writes for its next fsync: the write count at which it
    /// stops waiting (the writer that reaches it wakes it); `u64::MAX` otherwise.
    gather_until: AtomicU64,
    tx: tokio::sync::watch::Sender<SyncedState>,
    fsyncs: AtomicU64,
}

impl GroupCommit {
    /// Fails every write not yet durable (see [`SyncedState::generation`]).
    fn fail_pending(&self, why: String) {
        self.tx.send_modify(|s| {
            s.generation += 1;
            s.failed = Some(why);
        });
    }
}

/// The engine's view of its own health (see the module docs).
#[derive(Default)]
struct Health {
    /// Since when writes fail with an I/O error; `None` while healthy.
    failing_since: Mutex<Option<Instant>>,
    /// `failing_since.is_some()`, readable without the lock on every write.
    failing: AtomicBool,
    /// Wakes the doctor.
    wake: Condvar,
    /// The last write error seen.
    last_error: Mutex<Option<String>>,
    /// Recoveries (the probe succeeded again), by RocksDB itself or after a reopen.
    recoveries: AtomicU64,
    /// Reopens of the database by the doctor.
    reopens: AtomicU64,
    /// [`Engine::epoch`]: bumped by every reopen, successful or not.
    epoch: AtomicU64,
}

/// What the engine's threads share.
struct Shared {
    /// `None` only after a reopen failed to open the database again (the doctor retries).
    db: RwLock<Option<DB>>,
    config: RocksConfig,
    db_opts: Options,
    cache: Cache,
    group: Option<GroupCommit>,
    health: Health,
    /// Set while the database is open read-only (it could not open for writing: module docs).
    read_only: AtomicBool,
    /// Set once a missing reserve was reported, until it is in place again.
    reserve_warned: AtomicBool,
    stop: AtomicBool,
}

/// See the module docs.
pub struct RocksEngine {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn map_err(e: rocksdb::Error) -> Error {
    match e.kind() {
        rocksdb::ErrorKind::Corruption => Error::Corrupt(e.into_string()),
        rocksdb::ErrorKind::IOError => Error::Io(e.into_string()),
        _ => Error::Unavailable(e.into_string()),
    }
}

/// A RocksDB checkpoint (or any closed yeskv database) opened read-only: what a restore reads
/// a downloaded backup with.
pub struct CheckpointReader {
    db: DB,
}

impl CheckpointReader {
    /// Opens the database at `dir` read-only.
    pub fn open(dir: &Path) -> Result<CheckpointReader, Error> {
        let names: Vec<&str> = Space::ALL.iter().map(|s| s.name()).collect();
        let db =
            DB::open_cf_for_read_only(&Options::default(), dir, names, false).map_err(map_err)?;
        Ok(CheckpointReader { db })
    }

    /// Calls `each` with every `(key, value)` of `space` from `start` (inclusive) to `end`
    /// (exclusive; `None`: to the end), in key order; returns how many there were. Values are
    /// returned as stored: checking their checksums is the caller's.
    pub fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: Option<&[u8]>,
        mut each: impl FnMut(&[u8], &[u8]) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        let mode = rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward);
        let mut n = 0;
        for item in self.db.iterator_cf(cf(&self.db, space)?, mode) {
            let (k, v) = item.map_err(map_err)?;
            if end.is_some_and(|end| &*k >= end) {
                break;
            }
            each(&k, &v)?;
            n += 1;
        }
        Ok(n)
    }
}

fn cf(db: &DB, space: Space) -> Result<&rocksdb::ColumnFamily, Error> {
    db.cf_handle(space.name())
        .ok_or_else(|| Error::Unavailable(format!("column family {} missing", space.name())))
}

/// Makes one [`DataRecordFilter`] per compaction of the data column family (`filter.rs`).
struct FilterFactory {
    filter: DataFilter,
}

/// The filter of one compaction: the node's predicate, judged at the instant the compaction
/// began.
struct DataRecordFilter {
    filter: DataFilter,
    now_ms: u64,
}

const FILTER_NAME: &std::ffi::CStr = c"yeskv.data-filter";
const FILTER_FACTORY_NAME: &std::ffi::CStr = c"yeskv.data-filter-factory";

impl CompactionFilterFactory for FilterFactory {
    type Filter = DataRecordFilter;

    // RocksDB may call this from several compaction threads at once, through rust-rocksdb's
    // `&mut self`; it only clones and reads, which is what makes that harmless here.
    fn create(&mut self, _context: CompactionFilterContext) -> DataRecordFilter {
        DataRecordFilter {
            now_ms: self.filter.now_ms(),
            filter: self.filter.clone(),
        }
    }

    fn name(&self) -> &std::ffi::CStr {
        FILTER_FACTORY_NAME
    }
}

impl CompactionFilter for DataRecordFilter {
    fn filter(&mut self, _level: u32, key: &[u8], value: &[u8]) -> CompactionDecision {
        if self.filter.drops(key, value, self.now_ms) {
            CompactionDecision::Remove
        } else {
            CompactionDecision::Keep
        }
    }

    fn name(&self) -> &std::ffi::CStr {
        FILTER_NAME
    }
}

/// Opens the database at `config.path` with the engine's column families (read-only: replays
/// the WAL in memory and writes nothing).
fn open_db(
    config: &RocksConfig,
    db_opts: &Options,
    cache: &Cache,
    read_only: bool,
) -> Result<DB, Error> {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    let cf_opts = |space: Space| {
        let mut o = Options::default();
        if space == Space::Data {
            if let Some(filter) = &config.data_filter {
                o.set_compaction_filter_factory(FilterFactory {
                    filter: filter.clone(),
                });
            }
            if config.periodic_compaction_secs > 0 {
                o.set_periodic_compaction_seconds(config.periodic_compaction_secs);
            }
        }
        o.set_block_based_table_factory(&table);
        o.set_write_buffer_size(config.write_buffer_bytes() as usize);
        o.set_compression_type(DBCompressionType::Lz4);
        o.set_level_compaction_dynamic_level_bytes(true);
        // A whole-key bloom filter on the memtable answers "not there" without walking the
        // skip list (every write reads its key first).
        o.set_memtable_prefix_bloom_ratio(0.05);
        o.set_memtable_whole_key_filtering(true);
        o
    };
    // The default column family is unused, but RocksDB always opens it (rust-rocksdb with
    // `Options::default()` unless it is listed) and sizes the WAL it creates when resuming
    // after an error (e.g. a full disk) by that family's memtable, x1.1: at RocksDB's
    // 64 MiB that WAL preallocated ~70 MiB whatever `write_buffer_mb` said, which kept a
    // node that had filled its disk from recovering (found by scripts/chaos).
    let mut default_opts = Options::default();
    default_opts.set_write_buffer_size(config.write_buffer_bytes() as usize);
    let cfs = Space::ALL
        .iter()
        .map(|s| ColumnFamilyDescriptor::new(s.name(), cf_opts(*s)))
        .chain(std::iter::once(ColumnFamilyDescriptor::new(
            rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
            default_opts,
        )));
    if read_only {
        DB::open_cf_descriptors_read_only(db_opts, &config.path, cfs, false).map_err(map_err)
    } else {
        DB::open_cf_descriptors(db_opts, &config.path, cfs).map_err(map_err)
    }
}

/// Opens the database for writing if it can; if the disk is too full, releases the reserve and
/// tries again, and failing that opens it read-only. Returns the database and, when it is
/// read-only, why.
fn open_or_degrade(
    config: &RocksConfig,
    db_opts: &Options,
    cache: &Cache,
) -> Result<(DB, Option<String>), Error> {
    let first = match open_db(config, db_opts, cache, false) {
        Ok(db) => return Ok((db, None)),
        Err(Error::Io(m)) if disk::is_no_space(&m) => m,
        Err(e) => return Err(e),
    };
    let freed = disk::release_reserve(&config.path);
    let why = if freed > 0 {
        tracing::warn!(freed, error = %first, "disk full at open; released the reserve");
        match open_db(config, db_opts, cache, false) {
            Ok(db) => return Ok((db, None)),
            Err(Error::Io(m)) if disk::is_no_space(&m) => m,
            Err(e) => return Err(e),
        }
    } else {
        first
    };
    let db = open_db(config, db_opts, cache, true)?;
    let why = format!(
        "the disk holding {} is full ({why}): serving reads only until it has room",
        config.path.display()
    );
    tracing::error!(free = free_bytes(&config.path).unwrap_or(0), "{why}");
    Ok((db, Some(why)))
}

/// Bytes a reopen may write before it serves again: the memtables it recovers from the WAL and
/// flushes, one preallocated WAL, and a margin.
fn reopen_space_needed(config: &RocksConfig, memtable_bytes: u64) -> u64 {
    memtable_bytes + config.write_buffer_bytes() * 11 / 10 + REOPEN_MARGIN_BYTES
}

impl RocksEngine {
    /// Flushes `space` and compacts its keys between `start` and `end` (unbounded where
    /// `None`) down to the bottommost level, which drops what deletes and range deletes cover.
    fn compact_between(
        &self,
        space: Space,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
    ) -> Result<(), Error> {
        if self.shared.read_only.load(Ordering::SeqCst) {
            return Err(self.shared.read_only_error());
        }
        self.shared.with_db(|db| {
            let cf = cf(db, space)?;
            db.flush_cf(cf).map_err(map_err)?;
            let mut opts = rocksdb::CompactOptions::default();
            opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
            db.compact_range_cf_opt(cf, start, end, &opts);
            Ok(())
        })
    }

    /// Opens (or creates) the database.
    pub fn open(config: &RocksConfig) -> Result<Self, Error> {
        std::fs::create_dir_all(&config.path)
            .map_err(|e| Error::Io(format!("creating {}: {e}", config.path.display())))?;
        let cache = Cache::new_lru_cache(config.block_cache_mb.max(1) << 20);
        let mut db_opts = Options::default()
            .get_options_from_string(DB_OPTIONS)
            .map_err(map_err)?;
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        db_opts.enable_statistics();
        db_opts.set_statistics_level(rocksdb::statistics::StatsLevel::ExceptTimeForMutex);
        db_opts.set_keep_log_file_num(4);
        db_opts.set_max_log_file_size(INFO_LOG_BYTES_MAX);
        db_opts.set_max_total_wal_size(config.wal_bytes_max());
        db_opts.set_manifest_preallocation_size(256 << 10);
        // Writers come from a few async worker threads on few cores: RocksDB's adaptive
        // spin-then-yield wait for the write group leader burns the CPU the HTTP path needs.
        db_opts.set_enable_write_thread_adaptive_yield(false);
        let (db, read_only) = open_or_degrade(config, &db_opts, &cache)?;

        let group = (config.sync == SyncMode::Group).then(|| {
            let (tx, _rx) = tokio::sync::watch::channel(SyncedState::default());
            GroupCommit {
                written: AtomicU64::new(0),
                idle: AtomicBool::new(false),
                wake: Mutex::new(()),
                cond: Condvar::new(),
                window: Duration::from_micros(config.group_commit_window_us),
                gather_until: AtomicU64::new(u64::MAX),
                tx,
                fsyncs: AtomicU64::new(0),
            }
        });
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(db)),
            config: config.clone(),
            db_opts,
            cache,
            group,
            health: Health::default(),
            read_only: AtomicBool::new(read_only.is_some()),
            reserve_warned: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        match read_only {
            Some(why) => {
                *shared.health.last_error.lock() = Some(why);
                *shared.health.failing_since.lock() = Some(Instant::now());
                shared.health.failing.store(true, Ordering::SeqCst);
            }
            None => shared.keep_reserve(),
        }
        let engine = RocksEngine {
            shared: shared.clone(),
            threads: Mutex::new(Vec::new()),
        };
        let spawn = |name: &str, f: fn(&Shared)| {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || f(&s))
                .map_err(|e| Error::Io(format!("spawning {name} thread: {e}")))
        };
        if shared.group.is_some() {
            engine
                .threads
                .lock()
                .push(spawn("yeskv-group-commit", group_commit_loop)?);
        }
        engine
            .threads
            .lock()
            .push(spawn("yeskv-storage-doctor", doctor_loop)?);
        tracing::info!(
            path = %config.path.display(),
            sync = %config.sync,
            read_only = shared.read_only.load(Ordering::SeqCst),
            "RocksDB opened"
        );
        Ok(engine)
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.shared.config.path
    }

    /// Whether writes currently fail (a full disk, an I/O error) and the engine is recovering.
    pub fn is_failing(&self) -> bool {
        self.shared.health.failing.load(Ordering::SeqCst)
    }

    /// Times the engine closed and reopened its database to recover from a write failure.
    pub fn reopens(&self) -> u64 {
        self.shared.health.reopens.load(Ordering::Relaxed)
    }

    fn int_property(&self, space: Space, name: &str) -> f64 {
        self.shared
            .with_db(|db| {
                Ok(db
                    .property_int_value_cf(cf(db, space)?, name)
                    .ok()
                    .flatten())
            })
            .ok()
            .flatten()
            .unwrap_or(0) as f64
    }
}

impl Shared {
    /// Runs `f` on the open database (a reopen waits for it, and it for a reopen).
    fn with_db<T>(&self, f: impl FnOnce(&DB) -> Result<T, Error>) -> Result<T, Error> {
        match self.db.read().as_ref() {
            Some(db) => f(db),
            None => Err(Error::Unavailable(
                "storage is reopening after a write failure".into(),
            )),
        }
    }

    /// Notes a failed write: an I/O error wakes the doctor.
    fn write_failed(&self, e: &Error) {
        if !matches!(e, Error::Io(_)) {
            return;
        }
        *self.health.last_error.lock() = Some(e.to_string());
        let mut since = self.health.failing_since.lock();
        if since.is_none() {
            tracing::warn!(error = %e, "storage write failed; recovering");
            *since = Some(Instant::now());
            self.health.failing.store(true, Ordering::SeqCst);
            self.health.wake.notify_one();
        }
    }

    /// A small synced write: does the database take writes again?
    fn probe(&self) -> Result<(), Error> {
        self.with_db(|db| {
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            db.put_cf_opt(cf(db, Space::Meta)?, PROBE_KEY, now_ms().to_le_bytes(), &wo)
                .map_err(map_err)
        })
    }

    /// Closes and reopens the database (see the module docs); pending group writes fail. If it
    /// cannot open for writing for lack of space, it is open read-only afterwards (an error).
    fn reopen(&self) -> Result<(), Error> {
        let mut slot = self.db.write();
        if let Some(g) = &self.group {
            g.fail_pending("the database was reopened after a write failure".into());
        }
        // Close first: RocksDB allows one open instance per directory.
        drop(slot.take());
        let reopened = open_or_degrade(&self.config, &self.db_opts, &self.cache);
        // Bumped while no reader can use the database: whatever a reader saw before is stale.
        self.health.epoch.fetch_add(1, Ordering::SeqCst);
        let (db, read_only) = reopened?;
        *slot = Some(db);
        self.read_only.store(read_only.is_some(), Ordering::SeqCst);
        match read_only {
            None => Ok(()),
            Some(why) => Err(Error::Io(why)),
        }
    }

    /// Puts the reserve file back if the disk has room for it and for a reopen besides.
    fn keep_reserve(&self) {
        let headroom = reopen_space_needed(&self.config, 0);
        let warned = self.reserve_warned.load(Ordering::Relaxed);
        match disk::ensure_reserve(&self.config.path, self.config.reserve_bytes, headroom) {
            Ok(true) => {
                if warned {
                    tracing::info!(
                        bytes = self.config.reserve_bytes,
                        "storage reserve in place"
                    );
                }
                self.reserve_warned.store(false, Ordering::Relaxed);
            }
            Ok(false) | Err(_) if warned => {}
            Ok(false) => {
                tracing::warn!(
                    bytes = self.config.reserve_bytes,
                    free = free_bytes(&self.config.path).unwrap_or(0),
                    "no room for the storage reserve; a restart on a full disk may open read-only"
                );
                self.reserve_warned.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the storage reserve");
                self.reserve_warned.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Why writes are refused while the database is open read-only.
    fn read_only_error(&self) -> Error {
        Error::Io(self.health.last_error.lock().clone().unwrap_or_else(|| {
            format!(
                "the database in {} is open read-only",
                self.config.path.display()
            )
        }))
    }

    /// Bytes of all memtables (what a reopen flushes).
    fn memtable_bytes(&self) -> u64 {
        self.with_db(|db| {
            let mut total = 0;
            for space in Space::ALL {
                total += db
                    .property_int_value_cf(cf(db, space)?, "rocksdb.cur-size-all-mem-tables")
                    .ok()
                    .flatten()
                    .unwrap_or(0);
            }
            Ok(total)
        })
        .unwrap_or(0)
    }

    /// Sleeps `d` unless the engine stops first; false once it stops.
    fn pause(&self, d: Duration) -> bool {
        let mut since = self.health.failing_since.lock();
        if !self.stop.load(Ordering::Acquire) {
            self.health.wake.wait_for(&mut since, d);
        }
        !self.stop.load(Ordering::Acquire)
    }
}

/// The doctor thread (see the module docs).
fn doctor_loop(s: &Shared) {
    let mut space_warned = false;
    let mut last_failed_reopen: Option<Instant> = None;
    loop {
        // Sleep until a write fails, looking after the reserve meanwhile.
        let failing = {
            let mut since = s.health.failing_since.lock();
            if since.is_none() && !s.stop.load(Ordering::Acquire) {
                s.health.wake.wait_for(&mut since, HOUSEKEEPING_INTERVAL);
            }
            since.is_some()
        };
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        if !failing {
            s.keep_reserve();
            continue;
        }
        if !s.pause(PROBE_INTERVAL) {
            return;
        }
        let Some(since) = *s.health.failing_since.lock() else {
            continue;
        };
        // A read-only database cannot be probed: only a reopen makes it writable.
        if !s.read_only.load(Ordering::SeqCst) {
            match s.probe() {
                Ok(()) => {
                    *s.health.failing_since.lock() = None;
                    s.health.failing.store(false, Ordering::SeqCst);
                    *s.health.last_error.lock() = None;
                    s.health.recoveries.fetch_add(1, Ordering::Relaxed);
                    space_warned = false;
                    tracing::info!(
                        after_ms = since.elapsed().as_millis() as u64,
                        "storage takes writes again"
                    );
                    continue;
                }
                Err(e) => *s.health.last_error.lock() = Some(e.to_string()),
            }
            if since.elapsed() < RESUME_GRACE {
                continue;
            }
        }
        if last_failed_reopen.is_some_and(|t| t.elapsed() < RESUME_GRACE) {
            continue;
        }
        let needed = reopen_space_needed(&s.config, s.memtable_bytes());
        match free_bytes(&s.config.path) {
            Ok(free) if free >= needed => {}
            Ok(free) => {
                if !space_warned {
                    tracing::warn!(
                        free,
                        needed,
                        "storage failing; waiting for free space to reopen"
                    );
                    space_warned = true;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell the free space; reopening anyway");
            }
        }
        let started = Instant::now();
        match s.reopen() {
            Ok(()) => {
                last_failed_reopen = None;
                s.health.reopens.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    took_ms = started.elapsed().as_millis() as u64,
                    "storage reopened after a write failure"
                );
            }
            Err(e) => {
                last_failed_reopen = Some(Instant::now());
                *s.health.last_error.lock() = Some(e.to_string());
                tracing::error!(error = %e, "reopening storage for writing failed; will retry");
            }
        }
    }
}

/// Most writes the group committer waits for before an fsync (it waits for as many as the
/// last fsync carried, up to this and the window).
const GATHER_MAX: u64 = 256;

fn group_commit_loop(s: &Shared) {
    let Some(g) = &s.group else { return };
    // Writes up to here have been dealt with: made durable, or failed.
    let mut handled = 0u64;
    let mut last_batch = 0u64;
    loop {
        {
            let mut guard = g.wake.lock();
            while g.written.load(Ordering::Acquire) == handled && !s.stop.load(Ordering::Acquire) {
                g.idle.store(true, Ordering::SeqCst);
                // Re-check after announcing idleness: a writer that saw `idle == false` has
                // already bumped `written`, so nothing is missed.
                if g.written.load(Ordering::SeqCst) != handled {
                    break;
                }
                g.cond.wait(&mut guard);
            }
            g.idle.store(false, Ordering::SeqCst);
        }
        if !g.window.is_zero() && last_batch > 1 && !s.stop.load(Ordering::Acquire) {
            // Under concurrent load (the last fsync carried several writes), let more writes
            // join this one: fewer, larger fsyncs leave CPU to the writers. The wait ends as
            // soon as as many writes wait as the last fsync carried (the load's own batch
            // size), and at the window at most; a lone writer (last batch of one) is never
            // delayed.
            let want = handled + last_batch.min(GATHER_MAX);
            let deadline = Instant::now() + g.window;
            let mut guard = g.wake.lock();
            g.gather_until.store(want, Ordering::SeqCst);
            while g.written.load(Ordering::SeqCst) < want && !s.stop.load(Ordering::Acquire) {
                if g.cond.wait_until(&mut guard, deadline).timed_out() {
                    break;
                }
            }
            g.gather_until.store(u64::MAX, Ordering::SeqCst);
        }
        let target = g.written.load(Ordering::Acquire);
        if target == handled && s.stop.load(Ordering::Acquire) {
            return;
        }
        match s.with_db(|db| db.flush_wal(true).map_err(map_err)) {
            Ok(()) => {
                last_batch = target - handled;
                g.fsyncs.fetch_add(1, Ordering::Relaxed);
                g.tx.send_modify(|st| st.synced = target);
            }
            Err(e) => {
                tracing::error!(error = %e, "WAL fsync failed; the writes it covered fail");
                g.fail_pending(format!("WAL fsync failed: {e}"));
                s.write_failed(&e);
                last_batch = 0;
            }
        }
        handled = target;
    }
}

impl Engine for RocksEngine {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.shared.with_db(|db| {
            db.get_pinned_cf(cf(db, space)?, key)
                .map(|v| v.map(|s| s.to_vec()))
                .map_err(map_err)
        })
    }

    fn write(&self, batch: WriteBatch) -> Result<Durable, Error> {
        let s = &self.shared;
        // The generation is taken before the write is applied (see `SyncedState`).
        let pending = s.group.as_ref().map(|g| {
            let rx = g.tx.subscribe();
            let generation = rx.borrow().generation;
            (rx, generation)
        });
        if s.read_only.load(Ordering::SeqCst) {
            return Err(s.read_only_error());
        }
        // A database already known to fail refuses a write before its WAL sees it; the first
        // write to fail may have reached the WAL partway (or whole, with a failed fsync after).
        let was_failing = s.health.failing.load(Ordering::SeqCst);
        let applied = s.with_db(|db| {
            let mut wb = rocksdb::WriteBatch::default();
            for op in &batch.ops {
                match op {
                    Op::Put { space, key, value } => wb.put_cf(cf(db, *space)?, key, value),
                    Op::Delete { space, key } => wb.delete_cf(cf(db, *space)?, key),
                    Op::DeleteRange { space, start, end } => {
                        wb.delete_range_cf(cf(db, *space)?, start, end)
                    }
                }
            }
            let mut wo = WriteOptions::default();
            wo.set_sync(s.config.sync == SyncMode::Always);
            db.write_opt(wb, &wo).map_err(map_err)
        });
        if let Err(e) = &applied {
            s.write_failed(e);
        }
        applied.map_err(|e| match e {
            Error::Io(m) if !was_failing => Error::Uncertain(m),
            other => other,
        })?;
        match (&s.group, pending) {
            (Some(g), Some((rx, generation))) => {
                let seq = g.written.fetch_add(1, Ordering::SeqCst) + 1;
                // A busy committer picks this write up in its next round without being told;
                // a gathering one is told once its batch is complete.
                if g.idle.load(Ordering::SeqCst) || seq == g.gather_until.load(Ordering::SeqCst) {
                    let _guard = g.wake.lock();
                    g.cond.notify_one();
                }
                Ok(Durable {
                    pending: crate::Pending::Group(GroupPending {
                        seq,
                        generation,
                        rx,
                    }),
                })
            }
            _ => Ok(Durable::done()),
        }
    }

    fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<crate::Rows, Error> {
        self.shared.with_db(|db| {
            let mut ro = rocksdb::ReadOptions::default();
            ro.set_iterate_upper_bound(end.to_vec());
            let iter = db.iterator_cf_opt(
                cf(db, space)?,
                ro,
                rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward),
            );
            let mut out = Vec::new();
            for item in iter.take(limit) {
                let (k, v) = item.map_err(map_err)?;
                out.push((k.to_vec(), v.to_vec()));
            }
            Ok(out)
        })
    }

    fn flush(&self) -> Result<(), Error> {
        if self.shared.read_only.load(Ordering::SeqCst) {
            return Err(self.shared.read_only_error());
        }
        self.shared.with_db(|db| {
            db.flush_wal(true).map_err(map_err)?;
            for s in Space::ALL {
                db.flush_cf(cf(db, s)?).map_err(map_err)?;
            }
            Ok(())
        })
    }

    fn compact(&self, space: Space) -> Result<(), Error> {
        self.compact_between(space, None, None)
    }

    fn compact_range(&self, space: Space, start: &[u8], end: &[u8]) -> Result<(), Error> {
        self.compact_between(space, Some(start), Some(end))
    }

    fn checkpoint(&self, dir: &Path) -> Result<(), Error> {
        self.shared.with_db(|db| {
            // Flushes the memtables first (no WAL is copied): the copy holds every write
            // acknowledged before this call, in SST files hard-linked where possible.
            rocksdb::checkpoint::Checkpoint::new(db)
                .and_then(|c| c.create_checkpoint(dir))
                .map_err(map_err)
        })
    }

    fn live_data_bytes(&self) -> Option<u64> {
        let live = self.int_property(Space::Data, "rocksdb.estimate-live-data-size");
        let memtables = self.int_property(Space::Data, "rocksdb.cur-size-all-mem-tables");
        Some((live + memtables) as u64)
    }

    fn sync_mode(&self) -> SyncMode {
        self.shared.config.sync
    }

    fn epoch(&self) -> u64 {
        self.shared.health.epoch.load(Ordering::SeqCst)
    }

    fn disk(&self) -> Option<DiskStatus> {
        let path = &self.shared.config.path;
        let failing = self.is_failing();
        Some(DiskStatus {
            path: path.clone(),
            total_bytes: disk::total_bytes(path).unwrap_or(0),
            free_bytes: free_bytes(path).unwrap_or(0),
            usage: disk::Usage::of(path).unwrap_or_default(),
            reserve_bytes: disk::reserve_held(path),
            writable: !failing,
            error: if failing {
                self.shared.health.last_error.lock().clone()
            } else {
                None
            },
        })
    }

    fn stats(&self) -> Vec<EngineStat> {
        let ticker = |t| self.shared.db_opts.get_ticker_count(t) as f64;
        use rocksdb::statistics::Ticker;
        let mut out = vec![
            EngineStat {
                name: "rocksdb_memtable_bytes",
                help: "Bytes in all memtables of the data column family.",
                value: self.int_property(Space::Data, "rocksdb.cur-size-all-mem-tables"),
            },
            EngineStat {
                name: "rocksdb_pending_compaction_bytes",
                help: "Estimated bytes compaction still has to rewrite (data column family).",
                value: self.int_property(Space::Data, "rocksdb.estimate-pending-compaction-bytes"),
            },
            EngineStat {
                name: "rocksdb_live_sst_bytes",
                help: "Bytes of live SST files (data column family).",
                value: self.int_property(Space::Data, "rocksdb.live-sst-files-size"),
            },
            EngineStat {
                name: "rocksdb_live_data_bytes",
                help: "Estimated bytes of live data: what compaction would leave (data column family).",
                value: self.int_property(Space::Data, "rocksdb.estimate-live-data-size"),
            },
            EngineStat {
                name: "rocksdb_estimated_keys",
                help: "Estimated number of keys (data column family).",
                value: self.int_property(Space::Data, "rocksdb.estimate-num-keys"),
            },
            EngineStat {
                name: "rocksdb_write_stopped",
                help: "1 while RocksDB stops writes (too many L0 files or pending compaction).",
                value: self.int_property(Space::Data, "rocksdb.is-write-stopped"),
            },
            EngineStat {
                name: "rocksdb_delayed_write_rate",
                help: "Current delayed write rate in bytes/s (0 when writes are not slowed).",
                value: self.int_property(Space::Data, "rocksdb.actual-delayed-write-rate"),
            },
            EngineStat {
                name: "rocksdb_running_compactions",
                help: "Compactions running now.",
                value: self.int_property(Space::Data, "rocksdb.num-running-compactions"),
            },
            EngineStat {
                name: "rocksdb_l0_files",
                help: "SST files in level 0 (data column family); writes slow, then stop, as they pile up.",
                value: self.int_property(Space::Data, "rocksdb.num-files-at-level0"),
            },
            EngineStat {
                name: "rocksdb_compaction_read_bytes_total",
                help: "Bytes compactions read.",
                value: ticker(Ticker::CompactReadBytes),
            },
            EngineStat {
                name: "rocksdb_compaction_write_bytes_total",
                help: "Bytes compactions wrote.",
                value: ticker(Ticker::CompactWriteBytes),
            },
            EngineStat {
                name: "rocksdb_stall_micros_total",
                help: "Microseconds writers were stalled by RocksDB.",
                value: ticker(Ticker::StallMicros),
            },
            EngineStat {
                name: "rocksdb_block_cache_hits_total",
                help: "Block cache hits.",
                value: ticker(Ticker::BlockCacheHit),
            },
            EngineStat {
                name: "rocksdb_block_cache_misses_total",
                help: "Block cache misses.",
                value: ticker(Ticker::BlockCacheMiss),
            },
            EngineStat {
                name: "rocksdb_wal_syncs_total",
                help: "WAL fsyncs issued by RocksDB.",
                value: ticker(Ticker::WalFileSynced),
            },
        ];
        if let Some(d) = self.disk() {
            let u = d.usage;
            out.extend([
                EngineStat {
                    name: "disk_total_bytes",
                    help: "Size of the filesystem holding the database.",
                    value: d.total_bytes as f64,
                },
                EngineStat {
                    name: "disk_free_bytes",
                    help: "Bytes still free on the filesystem holding the database.",
                    value: d.free_bytes as f64,
                },
                EngineStat {
                    name: "disk_sst_bytes",
                    help: "Bytes the database's table files take on disk.",
                    value: u.sst as f64,
                },
                EngineStat {
                    name: "disk_wal_bytes",
                    help: "Bytes the database's write-ahead log takes on disk.",
                    value: u.wal as f64,
                },
                EngineStat {
                    name: "disk_other_bytes",
                    help: "Bytes the database's other files take (MANIFEST, info log, options).",
                    value: (u.manifest + u.info_log + u.other) as f64,
                },
                EngineStat {
                    name: "disk_reserve_bytes",
                    help: "Bytes the reserve file holds for a reopen on a full disk.",
                    value: d.reserve_bytes as f64,
                },
            ]);
        }
        let health = &self.shared.health;
        out.push(EngineStat {
            name: "read_only",
            help: "1 while the database is open read-only (it could not open for writing).",
            value: if self.shared.read_only.load(Ordering::SeqCst) {
                1.0
            } else {
                0.0
            },
        });
        out.push(EngineStat {
            name: "write_failing",
            help: "1 while writes fail (full disk, I/O error) and the engine recovers.",
            value: if self.is_failing() { 1.0 } else { 0.0 },
        });
        out.push(EngineStat {
            name: "recoveries_total",
            help: "Times writes worked again after failing.",
            value: health.recoveries.load(Ordering::Relaxed) as f64,
        });
        out.push(EngineStat {
            name: "reopens_total",
            help: "Times the database was closed and reopened to recover from a write failure.",
            value: self.reopens() as f64,
        });
        if let Some(g) = &self.shared.group {
            out.push(EngineStat {
                name: "group_commit_fsyncs_total",
                help: "WAL fsyncs issued by the group committer (each covers many writes).",
                value: g.fsyncs.load(Ordering::Relaxed) as f64,
            });
            out.push(EngineStat {
                name: "group_commit_writes_total",
                help: "Writes acknowledged through group commit.",
                value: g.written.load(Ordering::Relaxed) as f64,
            });
        }
        out
    }
}

impl Drop for RocksEngine {
    fn drop(&mut self) {
        let s = &self.shared;
        s.stop.store(true, Ordering::Release);
        if let Some(g) = &s.group {
            let _guard = g.wake.lock();
            g.cond.notify_one();
        }
        {
            let _guard = s.health.failing_since.lock();
            s.health.wake.notify_all();
        }
        for h in self.threads.lock().drain(..) {
            let _ = h.join();
        }
    }
}
