//! The local replica: this node's copy of the objects it stores, on top of an [`Engine`].
//!
//! It owns the node's [`Actor`] (node id + epoch) and every read-modify-write of an object:
//! - [`Replica::coordinate`] applies a client write (DVV `update` with this node's actor),
//! - [`Replica::merge`] folds in an object another replica sent (DVV `sync`),
//! - [`Replica::read`] decodes and verifies an object.
//!
//! Writes to one key are serialized by a striped lock held only across "read, update, append to
//! the WAL" — never across the fsync wait, so group commit can batch them.
//!
//! ## Hints (sloppy quorum)
//! When this node stands in for a down primary of a key, the object lives in the `hints` space,
//! keyed by (primary, storage key), not among the node's own data: the node's own replicas and
//! anti-entropy trees never see stand-in data, and handoff finds everything owed to one primary
//! with one prefix scan. A hint record is `[format 1][created_ms u64][key_hash u64][object record]`;
//! the object record carries its own CRC32C.
//!
//! A hint lives until its target took it durably (handoff) or, if the target left the layout,
//! until the key's current primaries did; never less. Age is no reason to drop one: a write
//! acknowledged with `w = 2` while two nodes stood in for its primaries exists only as hints,
//! and a 900 s chaos run lost four such writes when the hints aged out (issue 12: a hint kept
//! the time of its first write, so a write merged into it seconds after a 7 s partition healed
//! went with it). What bounds hints is their number per target
//! ([`HintLimits::per_target_max`]) and their bytes in all ([`HintLimits::bytes_max`]): past
//! either the node refuses to stand in (the coordinator tries the next fallback, then the
//! primary itself, and answers `503` if fewer than `w` nodes took the write: back-pressure
//! instead of a silent drop). Deleted values cannot come back through a hint kept long: the
//! reaper removes a tombstone only once no member holds a hint of the key (`aae.rs`).
//!
//! ## Anti-entropy trees
//! Once the partition count is known ([`Replica::init_trees`]), the replica keeps one Tictac
//! tree per partition (`yeskv_core::tictac`) over its own objects. Every store replaces the key's
//! digest in O(1) under the partition's tree lock, taken around the WAL append so that a
//! background rebuild (which holds the lock while it scans the partition) never counts a write
//! twice. Trees are saved in `meta` at a clean shutdown and trusted at the next start only if the
//! clean marker is set; otherwise every partition is rebuilt in the background and reports no
//! root until it is ready.
//!
//! ## Reaping
//! Records are stored without a reap instant, so compaction never drops one by itself. Instead a
//! store of an object that will become reapable (all tombstones or expiring) queues
//! `(reap_at, key)` in `meta`; the reaper (`aae.rs`) removes the key through [`Replica::reap`]
//! only once every primary holds the same object and the grace period has passed.
//!
//! ## Actor epochs (the kv679 guard)
//! On start the replica reads its epoch and a clean-shutdown marker from the `meta` space. If the
//! marker is missing (first start, wiped directory, crash, `kill -9`) it picks a new random epoch
//! before serving: a crash may have lost the tail of the WAL (in `sync = "none"`), and with it the
//! knowledge of dots already handed out, so the old actor must never mint again.
//!
//! The *startup record* (node id, epoch, clean marker cleared, saved dot sequence removed) is
//! written and flushed before anything else of this run is stored, so no dot of a new epoch
//! and no object reaches the disk ahead of it. On a full disk the engine may open read-only
//! and the record cannot be written at open: the replica then starts anyway (reads are served)
//! and writes the record first thing at its first store ([`Replica::commit`]), which fails
//! like any store until the disk has room.
//!
//! ## Dot counters (the reaped-key guard)
//! Within one epoch the actor's counters come from one sequence over all keys
//! ([`Object::update_at_least`]): a new dot exceeds every dot this actor ever minted, for any
//! key. Taking the next counter from the key's own object is not enough once the reaper has
//! removed it: a primary that reaped a tombstone would start the key over at 1, while another
//! primary that has not reaped yet (its clock behind, say) still holds the tombstone whose clock
//! already counts that dot, and drops the new write as seen — an acknowledged write lost
//! (found by the simulator, seed 10500). The sequence is saved at a clean stop like the epoch;
//! after a crash the epoch is new, so the sequence starts over with a new actor (and so does a
//! directory stopped cleanly before the sequence existed).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use parking_lot::Mutex;
use yeskv_core::codec::{decode_record, encode_record};
use yeskv_core::keyspace::partition_range;
use yeskv_core::tictac::{tree_digest, TictacTree, TreeGeometry};
use yeskv_core::{Actor, CausalContext, Dot, NodeId, Object, Version};
use yeskv_storage::{Durable, Engine, Space, SyncMode, WriteBatch};

use crate::error::Error;

/// Lock stripes for per-key write serialization.
const STRIPES: usize = 1024;

const META_NODE_ID: &[u8] = b"node_id";
const META_EPOCH: &[u8] = b"actor_epoch";
const META_CLEAN: &[u8] = b"clean_shutdown";
const META_STAND_IN_SEQ: &[u8] = b"stand_in_seq";
const META_DOT_SEQ: &[u8] = b"dot_seq";

/// Prefix of a tree saved in `meta` (then the partition, u16 BE).
const META_TREE: &[u8] = b"aae/";
/// Prefix of a reap-queue entry in `meta` (then reap_at u64 BE, then the storage key).
pub const META_REAP_QUEUE: &[u8] = b"rq/";
/// Rows per page when scanning a partition.
const SCAN_PAGE_ROWS: usize = 4096;

/// Format byte of a hint record.
const HINT_FORMAT: u8 = 1;
/// Bytes before the object record in a hint record.
const HINT_HEADER_BYTES: usize = 17;

/// Bounds on the hints this node keeps for others (module docs: past either, the node refuses
/// to stand in; it never drops a hint it holds).
#[derive(Clone, Copy, Debug)]
pub struct HintLimits {
    /// Most hints kept for one target node.
    pub per_target_max: u64,
    /// Most bytes of hints kept in all (keys and records as stored).
    pub bytes_max: u64,
}

impl Default for HintLimits {
    fn default() -> Self {
        HintLimits {
            per_target_max: 1_000_000,
            bytes_max: 1 << 30,
        }
    }
}

/// The hints this node holds: how many per target, and their bytes in all (loaded by a scan
/// at open, then kept up to date under one lock).
#[derive(Clone, Debug, Default)]
struct HintBook {
    counts: BTreeMap<NodeId, u64>,
    bytes: u64,
}

impl HintBook {
    /// Forgets one hint of `bytes` stored bytes held for `target`.
    fn remove(&mut self, target: &NodeId, bytes: u64) {
        if let Some(c) = self.counts.get_mut(target) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.counts.remove(target);
            }
        }
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// Where an object lives on this node: among its own replicas, or as a hint for another node.
#[derive(Clone, Copy, Debug)]
pub enum Slot<'a> {
    /// This node's own replica of the key.
    Own,
    /// Held for `target`, a primary of the key that could not take it.
    HintFor(&'a NodeId),
}

/// One hint as stored, for handoff.
#[derive(Clone, Debug)]
pub struct Hint {
    /// The key's storage key.
    pub storage_key: Vec<u8>,
    /// The key's hash (selects the stripe lock).
    pub key_hash: u64,
    /// When the hint was first written (ms since the epoch): for the oldest-hint gauge only.
    pub created_ms: u64,
    /// The object owed to the target.
    pub object: Object,
    /// The stored bytes, so that removal can check nothing changed since they were sent.
    pub raw: Vec<u8>,
}

/// The hints-space key of (target, storage key).
fn hint_key(target: &NodeId, storage_key: &[u8]) -> Vec<u8> {
    let t = target.as_str().as_bytes();
    let mut k = Vec::with_capacity(1 + t.len() + storage_key.len());
    k.push(t.len() as u8);
    k.extend_from_slice(t);
    k.extend_from_slice(storage_key);
    k
}

/// The first key after every hint for `target`.
fn hint_prefix_end(target: &NodeId) -> Vec<u8> {
    let mut k = hint_key(target, &[]);
    // Node ids are short ASCII, so the prefix is never all 0xff: increment its last byte.
    if let Some(last) = k.last_mut() {
        *last = last.saturating_add(1);
    }
    k
}

/// See the module docs.
pub struct Replica<E: Engine> {
    engine: E,
    actor: Actor,
    stripes: Vec<Mutex<()>>,
    corrupt_total: AtomicU64,
    reap_grace_ms: u64,
    hint_limits: HintLimits,
    /// Hints held per target node, and their bytes.
    hints: Mutex<HintBook>,
    /// How this run started (decides whether saved trees are trusted).
    startup: Startup,
    /// Stand-in writes coordinated in this epoch (each gets an actor of its own, see
    /// [`Replica::stand_in_actor`]); saved at a clean stop, restarts at 0 with a new epoch.
    stand_in_seq: AtomicU64,
    /// The highest dot counter this epoch's actor has minted, for any key (module docs: "Dot
    /// counters"); saved at a clean stop, restarts at 0 with a new epoch.
    dot_seq: AtomicU64,
    /// Anti-entropy trees, once the partition count is known.
    trees: OnceLock<Trees>,
    /// Set by [`Replica::close_cleanly`]: tree-tracked stores are refused from then on, so the
    /// trees it saves hold every object the disk does.
    closed: AtomicBool,
    /// The startup record, until it is durable (module docs, "Actor epochs").
    startup_record: Mutex<Option<WriteBatch>>,
    /// `startup_record.is_some()`, read without the lock on every store.
    startup_pending: AtomicBool,
}

/// A reap-queue entry: (queue key, reap_at, storage key).
pub type ReapEntry = (Vec<u8>, u64, Vec<u8>);

/// One anti-entropy tree per partition.
struct Trees {
    geometry: TreeGeometry,
    trees: Vec<Mutex<TictacTree>>,
    ready: Vec<AtomicBool>,
}

/// A partition's tree summary, for `/v1/status` and exchanges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeSummary {
    /// Root hash.
    pub root: u64,
    /// Keys in the tree.
    pub keys: u64,
}

/// How the replica came up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Startup {
    /// Previous run shut down cleanly; the epoch is kept.
    Clean,
    /// First start in this data directory.
    Fresh,
    /// The previous run did not shut down cleanly; a new epoch was chosen.
    Unclean,
}

impl<E: Engine> Replica<E> {
    /// Opens the replica: checks the data directory belongs to `node`, picks the actor epoch.
    /// `random_epoch` supplies a fresh random epoch if one is needed.
    pub async fn open(
        engine: E,
        node: NodeId,
        reap_grace_ms: u64,
        random_epoch: impl FnOnce() -> u64,
    ) -> Result<(Self, Startup), Error> {
        if let Some(owner) = engine.get(Space::Meta, META_NODE_ID)? {
            if owner != node.as_str().as_bytes() {
                return Err(Error::BadRequest(format!(
                    "data directory belongs to node {:?}, not {:?}",
                    String::from_utf8_lossy(&owner),
                    node.as_str()
                )));
            }
        }
        let stored_epoch = engine
            .get(Space::Meta, META_EPOCH)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_le_bytes);
        let clean = engine.get(Space::Meta, META_CLEAN)?.as_deref() == Some(&[1u8][..]);
        // A directory stopped cleanly before the dot sequence existed counted dots per key: its
        // actor may have minted any counter for a since-reaped key, so it does not mint again.
        let sequenced = engine.get(Space::Meta, META_DOT_SEQ)?.is_some();
        let (epoch, startup) = match stored_epoch {
            Some(e) if clean && sequenced => (e, Startup::Clean),
            Some(_) if clean => (random_epoch().max(1), Startup::Clean),
            Some(_) => (random_epoch().max(1), Startup::Unclean),
            None => (random_epoch().max(1), Startup::Fresh),
        };
        let saved = |key: &[u8]| -> Result<u64, Error> {
            Ok(match startup {
                Startup::Clean => engine
                    .get(Space::Meta, key)?
                    .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                    .map_or(0, u64::from_le_bytes),
                _ => 0,
            })
        };
        let stand_in_seq = saved(META_STAND_IN_SEQ)?;
        let dot_seq = saved(META_DOT_SEQ)?;
        let mut b = WriteBatch::new();
        b.put(
            Space::Meta,
            META_NODE_ID.to_vec(),
            node.as_str().as_bytes().to_vec(),
        )
        .put(
            Space::Meta,
            META_EPOCH.to_vec(),
            epoch.to_le_bytes().to_vec(),
        )
        .put(Space::Meta, META_CLEAN.to_vec(), vec![0]);
        // The sequence was read above; from here on only a clean stop of this build writes it
        // again (an older build running in between would leave a stale one behind).
        b.delete(Space::Meta, META_DOT_SEQ.to_vec());
        // The epoch must be on disk before any dot of it is handed out, whatever the sync mode.
        let startup_record = match write_startup_record(&engine, &b) {
            Ok(()) => None,
            Err(yeskv_storage::Error::Io(e)) => {
                tracing::warn!(error = %e, "cannot write the startup record yet (storage refuses writes); serving reads, writing it before the first store");
                Some(b)
            }
            Err(e) => return Err(e.into()),
        };
        let hints = count_hints(&engine)?;
        let replica = Replica {
            engine,
            actor: Actor::new(node, epoch),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            corrupt_total: AtomicU64::new(0),
            reap_grace_ms,
            hint_limits: HintLimits::default(),
            hints: Mutex::new(hints),
            startup: startup.clone(),
            stand_in_seq: AtomicU64::new(stand_in_seq),
            dot_seq: AtomicU64::new(dot_seq),
            trees: OnceLock::new(),
            closed: AtomicBool::new(false),
            startup_pending: AtomicBool::new(startup_record.is_some()),
            startup_record: Mutex::new(startup_record),
        };
        Ok((replica, startup))
    }

    /// Marks a clean shutdown after flushing everything: the next start keeps the epoch and
    /// trusts the trees saved here. From the first line on, stores of objects are refused
    /// ([`Error::NotServing`]): tasks the node spawned earlier (read repairs, replication
    /// beyond the quorum) may still run, and a store after its partition's tree was saved would
    /// leave that tree behind the disk for good (anti-entropy would find the key different on
    /// every exchange and never fix it; simulator seed 239 with clean restarts). A store either
    /// takes its tree's lock before the tree is saved and is in it, or sees `closed` under it.
    pub async fn close_cleanly(&self) -> Result<(), Error> {
        self.closed.store(true, Ordering::SeqCst);
        // Without its startup record on disk, the directory's meta describes an earlier run:
        // marking it clean would keep an epoch this run may have counted past.
        self.write_startup_record()?;
        tracing::trace!(node = %self.actor.node, "closing: saving trees");
        self.engine.flush()?;
        let mut b = WriteBatch::new();
        if let Some(t) = self.trees.get() {
            for (p, tree) in t.trees.iter().enumerate() {
                if t.ready[p].load(Ordering::Acquire) {
                    b.put(Space::Meta, tree_meta_key(p as u16), tree.lock().to_bytes());
                } else {
                    // A tree still rebuilding is not saved; an older saved one must not be
                    // trusted at the next start either.
                    b.delete(Space::Meta, tree_meta_key(p as u16));
                }
            }
        }
        b.put(
            Space::Meta,
            META_STAND_IN_SEQ.to_vec(),
            self.stand_in_seq
                .load(Ordering::SeqCst)
                .to_le_bytes()
                .to_vec(),
        );
        b.put(
            Space::Meta,
            META_DOT_SEQ.to_vec(),
            self.dot_seq.load(Ordering::SeqCst).to_le_bytes().to_vec(),
        );
        b.put(Space::Meta, META_CLEAN.to_vec(), vec![1]);
        self.engine.write(b)?.wait().await?;
        self.engine.flush()?;
        Ok(())
    }

    /// Sets the bounds on hints.
    pub fn set_hint_limits(&mut self, limits: HintLimits) {
        self.hint_limits = limits;
    }

    /// A fresh actor for one stand-in write (this node coordinating a write for a primary it
    /// could not reach). The node's own actor cannot be used there: its counters for a key live
    /// in the key's object on the primaries, which a stand-in does not hold — minting from an
    /// empty hint would reuse a dot the primaries have already seen, and they would drop the
    /// new value as known (kv679; found by the simulator, seed 43). So each stand-in write gets
    /// `node@H(epoch, seq)` with a sequence number never reused in this epoch: its first dot is
    /// unique by construction.
    pub fn stand_in_actor(&self) -> Actor {
        let seq = self.stand_in_seq.fetch_add(1, Ordering::SeqCst);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.actor.epoch.to_le_bytes());
        bytes[8..].copy_from_slice(&seq.to_le_bytes());
        let epoch = yeskv_core::keyspace::key_hash(b"stand-in", &bytes) | 1;
        Actor::new(self.actor.node.clone(), epoch)
    }

    /// This replica's actor.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The tombstone grace period, ms (`ttl.reap_grace_secs`).
    pub fn reap_grace_ms(&self) -> u64 {
        self.reap_grace_ms
    }

    /// The storage engine.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// Records found corrupt since start.
    pub fn corrupt_total(&self) -> u64 {
        self.corrupt_total.load(Ordering::Relaxed)
    }

    fn stripe(&self, key_hash: u64) -> &Mutex<()> {
        &self.stripes[(key_hash as usize) % STRIPES]
    }

    fn load(&self, storage_key: &[u8]) -> Result<Object, Error> {
        let raw = match self.engine.get(Space::Data, storage_key) {
            Ok(raw) => raw,
            Err(yeskv_storage::Error::Corrupt(m)) => return Err(self.corrupt(storage_key, m)),
            Err(e) => return Err(e.into()),
        };
        match raw {
            None => Ok(Object::new()),
            Some(bytes) => {
                decode_record(&bytes).map_err(|e| self.corrupt(storage_key, e.to_string()))
            }
        }
    }

    /// The hint held for `target`, if any: (created_ms, object, raw bytes).
    fn load_hint(
        &self,
        target: &NodeId,
        storage_key: &[u8],
    ) -> Result<Option<(u64, Object, Vec<u8>)>, Error> {
        let key = hint_key(target, storage_key);
        let raw = match self.engine.get(Space::Hints, &key) {
            Ok(raw) => raw,
            Err(yeskv_storage::Error::Corrupt(m)) => return Err(self.corrupt(storage_key, m)),
            Err(e) => return Err(e.into()),
        };
        let Some(raw) = raw else { return Ok(None) };
        let (created_ms, _, obj) = decode_hint(&raw).map_err(|e| self.corrupt(storage_key, e))?;
        Ok(Some((created_ms, obj, raw)))
    }

    /// Loads the object of `slot`.
    fn load_slot(&self, slot: Slot<'_>, storage_key: &[u8]) -> Result<Object, Error> {
        match slot {
            Slot::Own => self.load(storage_key),
            Slot::HintFor(t) => Ok(self
                .load_hint(t, storage_key)?
                .map(|(_, o, _)| o)
                .unwrap_or_default()),
        }
    }

    fn corrupt(&self, storage_key: &[u8], reason: String) -> Error {
        self.corrupt_total.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::CORRUPT_RECORDS).increment(1);
        tracing::error!(key = ?String::from_utf8_lossy(storage_key), %reason, "corrupt record detected; not served");
        Error::Corrupt(reason)
    }

    /// Reads the object stored under `storage_key` (empty if none).
    pub fn read(&self, storage_key: &[u8]) -> Result<Object, Error> {
        self.load(storage_key)
    }

    fn store(&self, storage_key: &[u8], old: &Object, obj: &Object) -> Result<Durable, Error> {
        // No reap instant in the record: only the reaper removes objects (module docs).
        tracing::trace!(node = %self.actor.node, key = %String::from_utf8_lossy(storage_key), ?old, new = ?obj, "store");
        let record = encode_record(obj, None);
        let mut b = WriteBatch::new();
        b.put(Space::Data, storage_key.to_vec(), record);
        if let Some(reap_at) = obj.reap_at_ms(self.reap_grace_ms) {
            b.put(
                Space::Meta,
                reap_queue_key(reap_at, storage_key),
                Vec::new(),
            );
        }
        self.commit_tracked(
            b,
            storage_key,
            tree_digest(storage_key, old),
            tree_digest(storage_key, obj),
        )
    }

    /// Commits `b` and replaces the key's digest in its partition's tree, atomically with
    /// respect to a tree rebuild (module docs).
    fn commit_tracked(
        &self,
        b: WriteBatch,
        storage_key: &[u8],
        old: Option<u64>,
        new: Option<u64>,
    ) -> Result<Durable, Error> {
        let Some((trees, p)) = self.tree_of(storage_key) else {
            return self.commit(b);
        };
        let mut tree = trees.trees[p].lock();
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::NotServing("shutting down"));
        }
        let durable = self.commit(b)?;
        if old != new {
            tree.replace(storage_key, old, new);
        }
        Ok(durable)
    }

    fn tree_of(&self, storage_key: &[u8]) -> Option<(&Trees, usize)> {
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

    /// Writes the startup record if it is still pending (module docs, "Actor epochs").
    fn write_startup_record(&self) -> Result<(), Error> {
        if !self.startup_pending.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut pending = self.startup_record.lock();
        if let Some(b) = pending.as_ref() {
            write_startup_record(&self.engine, b)?;
            tracing::info!(actor = %self.actor, "startup record written");
            *pending = None;
            self.startup_pending.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// The one way this replica writes to its engine: after the startup record.
    fn commit(&self, b: WriteBatch) -> Result<Durable, Error> {
        self.write_startup_record()?;
        let durable = if self.engine.sync_mode() == SyncMode::Always {
            // The fsync happens inside write(): keep it off the async workers' hot loop.
            tokio::task::block_in_place(|| self.engine.write(b))?
        } else {
            self.engine.write(b)?
        };
        Ok(durable)
    }

    /// Stores `obj` as the hint for `target`, replacing `existing` (its creation time and
    /// stored bytes) if one is held: a new hint counts against the target's quota, and growth
    /// against the bytes bound (module docs).
    #[allow(clippy::too_many_arguments)]
    fn store_hint(
        &self,
        target: &NodeId,
        key_hash: u64,
        storage_key: &[u8],
        obj: &Object,
        existing: Option<(u64, u64)>,
        now_ms: u64,
    ) -> Result<Durable, Error> {
        let key = hint_key(target, storage_key);
        let created_ms = existing.map_or(now_ms, |(c, _)| c);
        let mut value = Vec::with_capacity(HINT_HEADER_BYTES + 64);
        value.push(HINT_FORMAT);
        value.extend_from_slice(&created_ms.to_le_bytes());
        value.extend_from_slice(&key_hash.to_le_bytes());
        value.extend_from_slice(&encode_record(obj, None));
        let new_bytes = (key.len() + value.len()) as u64;
        let old_bytes = existing.map_or(0, |(_, b)| b);
        {
            let mut book = self.hints.lock();
            let count = book.counts.get(target).copied().unwrap_or(0);
            let refusal = if existing.is_none() && count >= self.hint_limits.per_target_max {
                Some(format!("already holds {count} hints for {target}"))
            } else if new_bytes > old_bytes
                && book.bytes - old_bytes.min(book.bytes) + new_bytes > self.hint_limits.bytes_max
            {
                Some(format!(
                    "holds {} bytes of hints, the bound is {}",
                    book.bytes, self.hint_limits.bytes_max
                ))
            } else {
                None
            };
            if let Some(why) = refusal {
                metrics::counter!(crate::metrics::HINTS_REFUSED).increment(1);
                return Err(Error::HintsFull(format!("{} {why}", self.actor.node)));
            }
            if existing.is_none() {
                *book.counts.entry(target.clone()).or_insert(0) += 1;
            }
            book.bytes = book.bytes.saturating_sub(old_bytes) + new_bytes;
        }
        let mut b = WriteBatch::new();
        b.put(Space::Hints, key, value);
        let result = self.commit(b);
        if result.is_err() {
            // Nothing was written: the book goes back to what the disk holds.
            let mut book = self.hints.lock();
            if existing.is_none() {
                book.remove(target, new_bytes);
            } else {
                book.bytes = book.bytes.saturating_sub(new_bytes) + old_bytes;
            }
        }
        result
    }

    /// Stores `obj` in `slot` (under the key's stripe lock).
    fn store_slot(
        &self,
        slot: Slot<'_>,
        key_hash: u64,
        storage_key: &[u8],
        before: &Object,
        obj: &Object,
        now_ms: u64,
    ) -> Result<Durable, Error> {
        match slot {
            Slot::Own => self.store(storage_key, before, obj),
            Slot::HintFor(t) => {
                let existing = self
                    .load_hint(t, storage_key)?
                    .map(|(c, _, raw)| (c, stored_hint_bytes(t, storage_key, &raw)));
                self.store_hint(t, key_hash, storage_key, obj, existing, now_ms)
            }
        }
    }

    /// Reads the hint held for `target` (empty if none).
    pub fn read_hint(&self, target: &NodeId, storage_key: &[u8]) -> Result<Object, Error> {
        self.load_slot(Slot::HintFor(target), storage_key)
    }

    /// Hints held for other nodes, in all.
    pub fn hints_pending(&self) -> u64 {
        self.hints.lock().counts.values().sum()
    }

    /// Bytes of the hints held (keys and records as stored).
    pub fn hint_bytes(&self) -> u64 {
        self.hints.lock().bytes
    }

    /// Hints held per target node.
    pub fn hint_counts(&self) -> BTreeMap<NodeId, u64> {
        self.hints.lock().counts.clone()
    }

    /// Up to `limit` hints held for `target`, in key order.
    pub fn hint_batch(&self, target: &NodeId, limit: usize) -> Result<Vec<Hint>, Error> {
        let start = hint_key(target, &[]);
        let rows = self
            .engine
            .scan(Space::Hints, &start, &hint_prefix_end(target), limit)?;
        let mut hints = Vec::with_capacity(rows.len());
        for (key, raw) in rows {
            let storage_key = key[start.len()..].to_vec();
            match decode_hint(&raw) {
                Ok((created_ms, key_hash, object)) => hints.push(Hint {
                    storage_key,
                    key_hash,
                    created_ms,
                    object,
                    raw,
                }),
                Err(e) => {
                    // A corrupt hint is never sent; drop it (anti-entropy repairs the target).
                    let _ = self.corrupt(&storage_key, e);
                    let bytes = (key.len() + raw.len()) as u64;
                    let mut b = WriteBatch::new();
                    b.delete(Space::Hints, key);
                    drop(self.commit(b)?);
                    self.hints.lock().remove(target, bytes);
                }
            }
        }
        Ok(hints)
    }

    /// Removes the hint for (`target`, `hint.storage_key`) if it is still what `hint.raw` holds
    /// (a write that arrived since keeps it for the next round). Returns whether it was removed.
    pub async fn remove_hint(&self, target: &NodeId, hint: &Hint) -> Result<bool, Error> {
        let durable = {
            let _guard = self.stripe(hint.key_hash).lock();
            let key = hint_key(target, &hint.storage_key);
            if self.engine.get(Space::Hints, &key)?.as_deref() != Some(hint.raw.as_slice()) {
                return Ok(false);
            }
            let bytes = (key.len() + hint.raw.len()) as u64;
            let mut b = WriteBatch::new();
            b.delete(Space::Hints, key);
            let d = self.commit(b)?;
            self.hints.lock().remove(target, bytes);
            d
        };
        durable.wait().await?;
        Ok(true)
    }

    /// Applies a client write as coordinator: the new sibling gets a fresh dot of this replica's
    /// actor. Returns the resulting object and the new dot once the write is durable.
    #[allow(clippy::too_many_arguments)]
    pub async fn coordinate(
        &self,
        slot: Slot<'_>,
        key_hash: u64,
        storage_key: &[u8],
        ctx: &CausalContext,
        version: Version,
        now_ms: u64,
        siblings_max: usize,
    ) -> Result<(Object, Dot), Error> {
        // Every dot of this actor was drawn from its sequence, so a context that names a
        // higher counter of it is forged (a token's CRC is no signature); taking it would
        // move the sequence — for every key — to wherever the token says, up to overflow.
        let claimed = ctx.max_counter(&self.actor);
        if claimed > self.dot_seq.load(Ordering::SeqCst) {
            return Err(Error::BadRequest(format!(
                "the causal context names write {claimed} of {}, which it never made",
                self.actor
            )));
        }
        let (obj, dot, durable) = {
            let _guard = self.stripe(key_hash).lock();
            let mut obj = self.load_slot(slot, storage_key)?;
            let before = obj.clone();
            let dot = match slot {
                Slot::Own => {
                    let next = self.dot_seq.fetch_add(1, Ordering::SeqCst) + 1;
                    let dot = obj.update_at_least(ctx, &self.actor, next, version, now_ms);
                    // The sequence stays at or above every counter minted, whatever the
                    // key's own history counted (it cannot count higher today: contexts are
                    // checked above and pre-sequence directories get a new epoch).
                    self.dot_seq.fetch_max(dot.counter, Ordering::SeqCst);
                    dot
                }
                Slot::HintFor(_) => obj.update(ctx, &self.stand_in_actor(), version, now_ms),
            };
            let count = obj.siblings().len();
            if count > siblings_max {
                return Err(Error::TooManySiblings {
                    count,
                    max: siblings_max,
                });
            }
            let durable = self.store_slot(slot, key_hash, storage_key, &before, &obj, now_ms)?;
            (obj, dot, durable)
        };
        // Applied (visible to reads) from here on: a failure to make it durable leaves the
        // outcome unknown (`Uncertain`, answered as `Error::Indeterminate`), not "nothing
        // written".
        durable.wait().await?;
        Ok((obj, dot))
    }

    /// Merges an object from another replica (replication, read repair, anti-entropy, handoff)
    /// into `slot`. Returns the merged object once durable; writes nothing if the merge changes
    /// nothing (a hint is still created if none was held, so that handoff delivers it).
    pub async fn merge(
        &self,
        slot: Slot<'_>,
        key_hash: u64,
        storage_key: &[u8],
        incoming: &Object,
        now_ms: u64,
    ) -> Result<Object, Error> {
        let (obj, durable) = {
            let _guard = self.stripe(key_hash).lock();
            let (mut obj, held) = match slot {
                Slot::Own => (self.load(storage_key)?, true),
                Slot::HintFor(t) => match self.load_hint(t, storage_key)? {
                    Some((_, o, _)) => (o, true),
                    None => (Object::new(), false),
                },
            };
            let before = obj.clone();
            obj.sync(incoming);
            if obj == before && held {
                return Ok(obj);
            }
            let durable = self.store_slot(slot, key_hash, storage_key, &before, &obj, now_ms)?;
            (obj, durable)
        };
        durable.wait().await?;
        Ok(obj)
    }
}

fn tree_meta_key(partition: u16) -> Vec<u8> {
    let mut k = META_TREE.to_vec();
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

fn reap_queue_key(reap_at: u64, storage_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(META_REAP_QUEUE.len() + 8 + storage_key.len());
    k.extend_from_slice(META_REAP_QUEUE);
    k.extend_from_slice(&reap_at.to_be_bytes());
    k.extend_from_slice(storage_key);
    k
}

/// Writes the startup record `b` and makes it durable (flushed, whatever the sync mode).
fn write_startup_record<E: Engine>(engine: &E, b: &WriteBatch) -> Result<(), yeskv_storage::Error> {
    drop(engine.write(b.clone())?);
    engine.flush()
}

/// Decodes a hint record: (created_ms, key_hash, object).
fn decode_hint(raw: &[u8]) -> Result<(u64, u64, Object), String> {
    if raw.len() < HINT_HEADER_BYTES || raw[0] != HINT_FORMAT {
        return Err(format!(
            "hint record of {} bytes with an unknown format",
            raw.len()
        ));
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&raw[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let obj = decode_record(&raw[HINT_HEADER_BYTES..]).map_err(|e| e.to_string())?;
    Ok((word(1), word(9), obj))
}

/// Bytes a hint takes as stored: its key and its record.
fn stored_hint_bytes(target: &NodeId, storage_key: &[u8], raw: &[u8]) -> u64 {
    (1 + target.as_str().len() + storage_key.len() + raw.len()) as u64
}

/// Counts the hints held per target, and their bytes (at open).
fn count_hints<E: Engine>(engine: &E) -> Result<HintBook, Error> {
    let mut book = HintBook::default();
    scan_pages(
        engine,
        Space::Hints,
        Vec::new(),
        &[0xff; 300],
        |key, raw| {
            let len = usize::from(*key.first().unwrap_or(&0));
            let id = key
                .get(1..1 + len)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| NodeId::new(s).ok());
            if let Some(id) = id {
                *book.counts.entry(id).or_insert(0) += 1;
            }
            book.bytes += (key.len() + raw.len()) as u64;
        },
    )?;
    Ok(book)
}

/// Calls `f` with every row of `space` in `[start, end)`, [`SCAN_PAGE_ROWS`] rows per engine
/// scan.
fn scan_pages<E: Engine>(
    engine: &E,
    space: Space,
    mut start: Vec<u8>,
    end: &[u8],
    mut f: impl FnMut(&[u8], &[u8]),
) -> Result<(), Error> {
    loop {
        let rows = engine.scan(space, &start, end, SCAN_PAGE_ROWS)?;
        for (key, value) in &rows {
            f(key, value);
        }
        match rows.last() {
            Some((last, _)) if rows.len() == SCAN_PAGE_ROWS => {
                start = last.clone();
                start.push(0);
            }
            _ => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use yeskv_storage::MemoryEngine;

    fn node() -> NodeId {
        NodeId::new("n1").expect("valid")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn epoch_survives_clean_restart_and_changes_after_crash() {
        let engine = Arc::new(MemoryEngine::new());
        let (r, s) = Replica::open(engine.clone(), node(), 0, || 11)
            .await
            .expect("open");
        assert_eq!(s, Startup::Fresh);
        assert_eq!(r.actor().epoch, 11);
        r.close_cleanly().await.expect("close");
        let (r, s) = Replica::open(engine.clone(), node(), 0, || 22)
            .await
            .expect("open");
        assert_eq!((s, r.actor().epoch), (Startup::Clean, 11));
        // No clean close this time: a crash.
        drop(r);
        let (r, s) = Replica::open(engine.clone(), node(), 0, || 33)
            .await
            .expect("open");
        assert_eq!((s, r.actor().epoch), (Startup::Unclean, 33));
        // Another node may not adopt this data directory.
        let other = NodeId::new("n2").expect("valid");
        assert!(Replica::open(engine, other, 0, || 1).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn corrupt_record_is_an_error_and_counted() {
        let engine = Arc::new(MemoryEngine::new());
        let (r, _) = Replica::open(engine.clone(), node(), 0, || 1)
            .await
            .expect("open");
        let v = Version::value(b"hello".to_vec(), 1, None);
        r.coordinate(Slot::Own, 7, b"k", &CausalContext::empty(), v, 1, 100)
            .await
            .expect("write");
        let mut raw = engine
            .get(Space::Data, b"k")
            .expect("get")
            .expect("present");
        let last = raw.len() - 1;
        raw[last] ^= 0x55;
        engine.poke(Space::Data, b"k", &raw);
        assert!(matches!(r.read(b"k"), Err(Error::Corrupt(_))));
        assert_eq!(r.corrupt_total(), 1);
        // A write over a corrupt record is refused too: it would hide the damage.
        let v = Version::value(b"again".to_vec(), 2, None);
        assert!(r
            .coordinate(Slot::Own, 7, b"k", &CausalContext::empty(), v, 2, 100)
            .await
            .is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn sibling_limit_refuses_without_writing() {
        let engine = Arc::new(MemoryEngine::new());
        let (r, _) = Replica::open(engine, node(), 0, || 1).await.expect("open");
        for i in 0..3u8 {
            let v = Version::value(vec![i], 1, None);
            r.coordinate(Slot::Own, 1, b"k", &CausalContext::empty(), v, 1, 3)
                .await
                .expect("write");
        }
        let v = Version::value(vec![9], 1, None);
        let e = r
            .coordinate(Slot::Own, 1, b"k", &CausalContext::empty(), v, 1, 3)
            .await;
        assert!(matches!(
            e,
            Err(Error::TooManySiblings { count: 4, max: 3 })
        ));
        assert_eq!(r.read(b"k").expect("read").siblings().len(), 3);
    }
    /// A primary that reaped a key must not mint a dot another primary's unreaped tombstone
    /// already counts: that primary would take the new write as one it had seen and drop it
    /// (simulator seed 10500). Fails when dots are counted per key only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_write_after_reaping_survives_a_replica_that_did_not_reap() {
        let (x, _) = Replica::open(Arc::new(MemoryEngine::new()), node(), 0, || 1)
            .await
            .expect("open x");
        let other = NodeId::new("n2").expect("valid");
        let (y, _) = Replica::open(Arc::new(MemoryEngine::new()), other, 0, || 2)
            .await
            .expect("open y");
        let (key, hash, now) = (&b"k"[..], 5, 1_000);
        let empty = CausalContext::empty();
        let (written, _) = x
            .coordinate(
                Slot::Own,
                hash,
                key,
                &empty,
                Version::value(b"a".to_vec(), now, None),
                now,
                100,
            )
            .await
            .expect("write");
        let (tombstone, _) = x
            .coordinate(
                Slot::Own,
                hash,
                key,
                &written.context(),
                Version::tombstone(now),
                now,
                100,
            )
            .await
            .expect("delete");
        y.merge(Slot::Own, hash, key, &tombstone, now)
            .await
            .expect("replicate");
        // x reaps its copy (grace 0); y has not yet.
        let digest = tree_digest(key, &tombstone).expect("digest");
        assert!(x.reap(hash, key, digest, now + 1).await.expect("reap"));
        assert!(x.read(key).expect("read").siblings().is_empty());

        let (rewritten, dot) = x
            .coordinate(
                Slot::Own,
                hash,
                key,
                &empty,
                Version::value(b"b".to_vec(), now + 2, None),
                now + 2,
                100,
            )
            .await
            .expect("write after reap");
        assert!(
            !tombstone.clock().contains(&dot),
            "{dot:?} reuses a dot the unreaped tombstone counts"
        );
        let merged = y
            .merge(Slot::Own, hash, key, &rewritten, now + 2)
            .await
            .expect("repair");
        let values: Vec<_> = merged
            .visible(now + 2)
            .filter_map(|s| s.version.value.clone())
            .collect();
        assert_eq!(values, vec![b"b".to_vec()]);
    }

    /// The dot sequence survives a clean restart (same actor: it must keep counting up).
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn dot_sequence_survives_a_clean_restart() {
        let engine = Arc::new(MemoryEngine::new());
        let (r, _) = Replica::open(engine.clone(), node(), 0, || 1)
            .await
            .expect("open");
        let empty = CausalContext::empty();
        let mut last = 0;
        for key in [&b"a"[..], b"b", b"c"] {
            let (_, dot) = r
                .coordinate(
                    Slot::Own,
                    1,
                    key,
                    &empty,
                    Version::value(vec![1], 1, None),
                    1,
                    100,
                )
                .await
                .expect("write");
            assert!(dot.counter > last, "counters rise across keys");
            last = dot.counter;
        }
        r.close_cleanly().await.expect("close");
        let (r, s) = Replica::open(engine.clone(), node(), 0, || 2)
            .await
            .expect("reopen");
        assert_eq!((s, r.actor().epoch), (Startup::Clean, 1));
        let (_, dot) = r
            .coordinate(
                Slot::Own,
                1,
                b"d",
                &empty,
                Version::value(vec![1], 1, None),
                1,
                100,
            )
            .await
            .expect("write");
        assert!(dot.counter > last, "{} after {last}", dot.counter);
        // A directory stopped cleanly before the sequence existed gets a new actor.
        r.close_cleanly().await.expect("close");
        let mut b = WriteBatch::new();
        b.delete(Space::Meta, META_DOT_SEQ.to_vec());
        engine
            .write(b)
            .expect("write")
            .wait()
            .await
            .expect("durable");
        let (r, s) = Replica::open(engine, node(), 0, || 3)
            .await
            .expect("reopen");
        assert_eq!((s, r.actor().epoch), (Startup::Clean, 3));
    }
    /// A store after `close_cleanly` began is refused, so the trees it saved match the disk at
    /// the next (clean) start. Fails when late stores are let through: the saved tree of the
    /// key's partition then lags the disk (simulator seed 239 with clean restarts).
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn saved_trees_match_the_disk_after_a_clean_stop() {
        let engine = Arc::new(MemoryEngine::new());
        let (r, _) = Replica::open(engine.clone(), node(), 0, || 1)
            .await
            .expect("open");
        for p in r.init_trees(8) {
            r.rebuild_tree(p).expect("rebuild");
        }
        // Storage keys begin with their partition (here 3).
        let key = &[0u8, 3, b'k'][..];
        let empty = CausalContext::empty();
        let (written, _) = r
            .coordinate(
                Slot::Own,
                9,
                key,
                &empty,
                Version::value(b"a".to_vec(), 1, None),
                1,
                100,
            )
            .await
            .expect("write");
        r.close_cleanly().await.expect("close");
        // A late repair (a task spawned before the stop) arrives with a newer object.
        let (x, _) = Replica::open(
            Arc::new(MemoryEngine::new()),
            NodeId::new("n2").expect("id"),
            0,
            || 2,
        )
        .await
        .expect("other");
        let (newer, _) = x
            .coordinate(
                Slot::Own,
                9,
                key,
                &written.context(),
                Version::value(b"b".to_vec(), 2, None),
                2,
                100,
            )
            .await
            .expect("newer");
        assert!(matches!(
            r.merge(Slot::Own, 9, key, &newer, 2).await,
            Err(Error::NotServing(_))
        ));
        drop(r);

        let (r, s) = Replica::open(engine, node(), 0, || 3)
            .await
            .expect("reopen");
        assert_eq!(s, Startup::Clean);
        assert!(r.init_trees(8).is_empty(), "saved trees are trusted");
        let saved = r.tree_summary(3).expect("tree");
        r.rebuild_tree(3).expect("rebuild");
        assert_eq!(
            r.tree_summary(3).expect("tree"),
            saved,
            "saved tree lags the disk"
        );
    }
    /// Listing a segment's keys replaces a tree that no longer matches the disk (here made
    /// stale by hand), so an exchange heals it. Fails without the check: the tree stays wrong.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn listing_segment_keys_replaces_a_stale_tree() {
        let (r, _) = Replica::open(Arc::new(MemoryEngine::new()), node(), 0, || 1)
            .await
            .expect("open");
        for p in r.init_trees(8) {
            r.rebuild_tree(p).expect("rebuild");
        }
        let key = &[0u8, 3, b'k'][..];
        let v = Version::value(b"a".to_vec(), 1, None);
        r.coordinate(Slot::Own, 9, key, &CausalContext::empty(), v, 1, 100)
            .await
            .expect("write");
        let good = r.tree_summary(3).expect("tree");
        // A digest the disk does not have, in another segment of the same partition.
        let trees = r.trees.get().expect("trees");
        trees.trees[3]
            .lock()
            .add(&[0u8, 3, b'z', b'z'][..], 0xdead_beef);
        assert_ne!(r.tree_summary(3).expect("tree"), good);
        let segment = trees.geometry.segment_of(key);
        let listed = r.segment_keys(3, &[segment]).expect("keys");
        assert_eq!(listed.len(), 1);
        assert_eq!(r.tree_summary(3).expect("tree"), good);
    }
    /// A context naming a counter of this node's actor beyond anything it minted is refused
    /// and moves nothing (it would push the actor's sequence, for every key, toward overflow).
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_forged_counter_of_this_actor_is_refused() {
        let (r, _) = Replica::open(Arc::new(MemoryEngine::new()), node(), 0, || 1)
            .await
            .expect("open");
        let forged =
            CausalContext::from_seen([(r.actor().clone(), u64::MAX - 1)].into_iter().collect());
        let v = Version::value(b"x".to_vec(), 1, None);
        let e = r.coordinate(Slot::Own, 1, b"k", &forged, v, 1, 100).await;
        assert!(matches!(e, Err(Error::BadRequest(_))), "{e:?}");
        assert!(r.read(b"k").expect("read").siblings().is_empty());
        let v = Version::value(b"y".to_vec(), 1, None);
        let (_, dot) = r
            .coordinate(Slot::Own, 1, b"k", &CausalContext::empty(), v, 1, 100)
            .await
            .expect("write");
        assert_eq!(dot.counter, 1);
    }
}
