//! The RocksDB engine: the product's storage.
//!
//! One RocksDB instance per node with a column family per [`Space`]. Durability follows the
//! configured [`SyncMode`]; `group` mode runs a *group commit* thread: writers append to the WAL
//! without syncing, take a sequence number, and wait until the committer has fsynced past it. The
//! committer loops "take the highest sequence written, fsync the WAL, publish it", so however
//! many writes arrive during one fsync, they share the next one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex};
use rocksdb::compaction_filter::Decision;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Options, WriteOptions, DB,
};

use crate::{Durable, Engine, EngineStat, Error, Op, Space, SyncMode, WriteBatch};

/// Wall-clock now in ms since the Unix epoch (compaction filters need real time).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

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
}

impl RocksConfig {
    /// Defaults for a database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RocksConfig {
            path: path.into(),
            sync: SyncMode::default(),
            block_cache_mb: 256,
            write_buffer_mb: 64,
            group_commit_window_us: 200,
        }
    }
}

/// Published by the group committer.
#[derive(Clone, Debug, Default)]
pub(crate) struct SyncedState {
    pub(crate) synced: u64,
    pub(crate) failed: Option<String>,
}

struct GroupCommit {
    written: AtomicU64,
    /// Set while the committer waits for work: only then does a writer need to wake it.
    idle: AtomicBool,
    wake: Mutex<()>,
    cond: Condvar,
    stop: AtomicBool,
    /// How long the committer waits for more writes before each fsync.
    window: std::time::Duration,
    tx: tokio::sync::watch::Sender<SyncedState>,
    fsyncs: AtomicU64,
}

/// See the module docs.
pub struct RocksEngine {
    db: Arc<DB>,
    opts: Options,
    sync: SyncMode,
    group: Option<Arc<GroupCommit>>,
    committer: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
    reaped: Arc<AtomicU64>,
}

fn map_err(e: rocksdb::Error) -> Error {
    match e.kind() {
        rocksdb::ErrorKind::Corruption => Error::Corrupt(e.into_string()),
        rocksdb::ErrorKind::IOError => Error::Io(e.into_string()),
        _ => Error::Unavailable(e.into_string()),
    }
}

impl RocksEngine {
    /// Opens (or creates) the database.
    pub fn open(config: &RocksConfig) -> Result<Self, Error> {
        std::fs::create_dir_all(&config.path)
            .map_err(|e| Error::Io(format!("creating {}: {e}", config.path.display())))?;
        let cache = Cache::new_lru_cache(config.block_cache_mb.max(1) << 20);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);

        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        db_opts.enable_statistics();
        db_opts.set_statistics_level(rocksdb::statistics::StatsLevel::ExceptTimeForMutex);
        db_opts.set_keep_log_file_num(4);
        // Writers come from a few async worker threads on few cores: RocksDB's adaptive
        // spin-then-yield wait for the write group leader burns the CPU the HTTP path needs.
        db_opts.set_enable_write_thread_adaptive_yield(false);

        let reaped = Arc::new(AtomicU64::new(0));
        let cf_opts = |space: Space| {
            let mut o = Options::default();
            o.set_block_based_table_factory(&table);
            o.set_write_buffer_size(config.write_buffer_mb.max(1) << 20);
            o.set_compression_type(DBCompressionType::Lz4);
            o.set_level_compaction_dynamic_level_bytes(true);
            // A whole-key bloom filter on the memtable answers "not there" without walking the
            // skip list (every write reads its key first).
            o.set_memtable_prefix_bloom_ratio(0.05);
            o.set_memtable_whole_key_filtering(true);
            if space == Space::Data {
                let reaped = reaped.clone();
                o.set_compaction_filter(
                    "yeskv-reap",
                    move |_level: u32, _key: &[u8], value: &[u8]| {
                        match yeskv_core::codec::record_reap_at_ms(value) {
                            Some(t) if t <= now_ms() => {
                                reaped.fetch_add(1, Ordering::Relaxed);
                                Decision::Remove
                            }
                            _ => Decision::Keep,
                        }
                    },
                );
            }
            o
        };
        // The default column family is unused, but RocksDB always opens it (rust-rocksdb with
        // `Options::default()` unless it is listed) and sizes the WAL it creates when resuming
        // after an error (e.g. a full disk) by that family's memtable, x1.1: at RocksDB's
        // 64 MiB that WAL preallocated ~70 MiB whatever `write_buffer_mb` said, which kept a
        // node that had filled its disk from recovering (found by scripts/chaos).
        let mut default_opts = Options::default();
        default_opts.set_write_buffer_size(config.write_buffer_mb.max(1) << 20);
        let cfs = Space::ALL
            .iter()
            .map(|s| ColumnFamilyDescriptor::new(s.name(), cf_opts(*s)))
            .chain(std::iter::once(ColumnFamilyDescriptor::new(
                rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
                default_opts,
            )));
        let db = DB::open_cf_descriptors(&db_opts, &config.path, cfs).map_err(map_err)?;
        let db = Arc::new(db);

        let (group, committer) = if config.sync == SyncMode::Group {
            let (tx, _rx) = tokio::sync::watch::channel(SyncedState::default());
            let g = Arc::new(GroupCommit {
                written: AtomicU64::new(0),
                idle: AtomicBool::new(false),
                wake: Mutex::new(()),
                cond: Condvar::new(),
                stop: AtomicBool::new(false),
                window: std::time::Duration::from_micros(config.group_commit_window_us),
                tx,
                fsyncs: AtomicU64::new(0),
            });
            let (g2, db2) = (g.clone(), db.clone());
            let handle = std::thread::Builder::new()
                .name("yeskv-group-commit".into())
                .spawn(move || group_commit_loop(&g2, &db2))
                .map_err(|e| Error::Io(format!("spawning group commit thread: {e}")))?;
            (Some(g), Some(handle))
        } else {
            (None, None)
        };
        tracing::info!(path = %config.path.display(), sync = %config.sync, "RocksDB opened");
        Ok(RocksEngine {
            db,
            opts: db_opts,
            sync: config.sync,
            group,
            committer: Mutex::new(committer),
            path: config.path.clone(),
            reaped,
        })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, space: Space) -> Result<&rocksdb::ColumnFamily, Error> {
        self.db
            .cf_handle(space.name())
            .ok_or_else(|| Error::Unavailable(format!("column family {} missing", space.name())))
    }

    fn int_property(&self, space: Space, name: &str) -> f64 {
        self.cf(space)
            .ok()
            .and_then(|cf| self.db.property_int_value_cf(cf, name).ok().flatten())
            .unwrap_or(0) as f64
    }
}

fn group_commit_loop(g: &GroupCommit, db: &DB) {
    let mut synced = 0u64;
    let mut last_batch = 0u64;
    loop {
        {
            let mut guard = g.wake.lock();
            while g.written.load(Ordering::Acquire) == synced && !g.stop.load(Ordering::Acquire) {
                g.idle.store(true, Ordering::SeqCst);
                // Re-check after announcing idleness: a writer that saw `idle == false` has
                // already bumped `written`, so nothing is missed.
                if g.written.load(Ordering::SeqCst) != synced {
                    break;
                }
                g.cond.wait(&mut guard);
            }
            g.idle.store(false, Ordering::SeqCst);
        }
        if !g.window.is_zero() && last_batch > 1 && !g.stop.load(Ordering::Acquire) {
            // Under concurrent load (the last fsync carried several writes), let more writes
            // join this one: fewer, larger fsyncs leave CPU to the writers. A lone writer
            // (last batch of one) is never delayed.
            std::thread::sleep(g.window);
        }
        let target = g.written.load(Ordering::Acquire);
        if target == synced && g.stop.load(Ordering::Acquire) {
            return;
        }
        match db.flush_wal(true) {
            Ok(()) => {
                last_batch = target - synced;
                synced = target;
                g.fsyncs.fetch_add(1, Ordering::Relaxed);
                g.tx.send_modify(|s| s.synced = synced);
            }
            Err(e) => {
                tracing::error!(error = %e, "WAL fsync failed; refusing further acknowledgements");
                g.tx.send_modify(|s| s.failed = Some(e.to_string()));
                // Keep retrying: an fsync can fail on a transiently full disk.
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

impl Engine for RocksEngine {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let cf = self.cf(space)?;
        self.db
            .get_pinned_cf(cf, key)
            .map(|v| v.map(|s| s.to_vec()))
            .map_err(map_err)
    }

    fn write(&self, batch: WriteBatch) -> Result<Durable, Error> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in &batch.ops {
            match op {
                Op::Put { space, key, value } => wb.put_cf(self.cf(*space)?, key, value),
                Op::Delete { space, key } => wb.delete_cf(self.cf(*space)?, key),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync == SyncMode::Always);
        self.db.write_opt(wb, &wo).map_err(map_err)?;
        match &self.group {
            None => Ok(Durable::done()),
            Some(g) => {
                let seq = g.written.fetch_add(1, Ordering::SeqCst) + 1;
                let rx = g.tx.subscribe();
                // A busy committer picks this write up in its next round without being told.
                if g.idle.load(Ordering::SeqCst) {
                    let _guard = g.wake.lock();
                    g.cond.notify_one();
                }
                Ok(Durable {
                    pending: crate::Pending::Group(seq, rx),
                })
            }
        }
    }

    fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<crate::Rows, Error> {
        let cf = self.cf(space)?;
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(end.to_vec());
        let iter = self.db.iterator_cf_opt(
            cf,
            ro,
            rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter.take(limit) {
            let (k, v) = item.map_err(map_err)?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn flush(&self) -> Result<(), Error> {
        self.db.flush_wal(true).map_err(map_err)?;
        for s in Space::ALL {
            self.db.flush_cf(self.cf(s)?).map_err(map_err)?;
        }
        Ok(())
    }

    fn compact(&self, space: Space) -> Result<(), Error> {
        let cf = self.cf(space)?;
        self.db.flush_cf(cf).map_err(map_err)?;
        let mut opts = rocksdb::CompactOptions::default();
        opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        self.db
            .compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &opts);
        Ok(())
    }

    fn sync_mode(&self) -> SyncMode {
        self.sync
    }

    fn stats(&self) -> Vec<EngineStat> {
        let ticker = |t| self.opts.get_ticker_count(t) as f64;
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
        out.push(EngineStat {
            name: "reaped_records_total",
            help: "Records dropped by the compaction filter (expired TTLs, old tombstones).",
            value: self.reaped.load(Ordering::Relaxed) as f64,
        });
        if let Some(g) = &self.group {
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
        if let Some(g) = &self.group {
            g.stop.store(true, Ordering::Release);
            let _guard = g.wake.lock();
            g.cond.notify_one();
        }
        if let Some(h) = self.committer.lock().take() {
            let _ = h.join();
        }
    }
}
