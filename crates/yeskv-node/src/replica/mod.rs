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
//! Submodules: [`hints`] (copies kept for down primaries), [`trees`] (anti-entropy trees),
//! [`reap`] (the reap queue and removing a key).
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
//! and writes the record first thing at its first store (`Replica::commit`), which fails like
//! any store until the disk has room.
//!
//! ## Store format (the downgrade guard)
//! The `meta` space records the store format of the directory ([`STORE_FORMAT`]: what the
//! spaces hold and how their keys are laid out; the records and layouts carry format bytes of
//! their own). A build opens a directory of its own format or older (a directory of release
//! 0.1.0 has no marker and is format 1) and writes its format in the startup record; it
//! refuses, before changing anything, a directory a newer release wrote, whose keys it might
//! misread. So an upgrade is one way per format: a release that bumps the format says so in
//! the changelog.
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

mod hints;
mod ranges;
mod reap;
mod trees;
mod xr;

pub use hints::{decode_stored_hint, Hint, HintLimits};
pub use reap::{ReapEntry, META_REAP_QUEUE};
pub use trees::TreeSummary;
pub use xr::{
    XrEntry, XrRegion, META_XR_QUEUE, QUEUE_ENTRIES_MAX_DEFAULT as XR_QUEUE_ENTRIES_MAX_DEFAULT,
};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use yeskv_core::codec::{decode_record, encode_record, record_len};
use yeskv_core::tictac::tree_digest;
use yeskv_core::{Actor, CausalContext, Dot, NodeId, Object, Version};
use yeskv_storage::{Durable, Engine, Space, SyncMode, WriteBatch};

use crate::error::Error;
use hints::{count_hints, stored_hint_bytes, HintBook};
use reap::reap_queue_key;
use trees::{tree_meta_key, Trees};
use xr::{count_queue, XrBook};

/// Lock stripes for per-key write serialization.
const STRIPES: usize = 1024;

const META_NODE_ID: &[u8] = b"node_id";

/// The store format this build writes and the newest it reads (see the module docs).
pub const STORE_FORMAT: u32 = 1;

const META_STORE_FORMAT: &[u8] = b"store_format";

const META_EPOCH: &[u8] = b"actor_epoch";

const META_CLEAN: &[u8] = b"clean_shutdown";

const META_STAND_IN_SEQ: &[u8] = b"stand_in_seq";

const META_DOT_SEQ: &[u8] = b"dot_seq";

/// Prefix of a tree saved in `meta` (then the partition, u16 BE).
const META_TREE: &[u8] = b"aae/";

/// Rows per page when scanning a partition.
const SCAN_PAGE_ROWS: usize = 4096;

/// What a coordinated write does to its key's object ([`Replica::coordinate_queuing`]).
pub enum Change<'a> {
    /// A client write: supersedes the siblings `ctx` covers and adds `version`.
    Put {
        /// What the client had seen.
        ctx: &'a CausalContext,
        /// What it writes.
        version: Version,
    },
    /// Supersedes every sibling held here with a version made, under the key's lock, from the
    /// object and the new write's dot: a data-type operation folding the siblings' states, a
    /// last-writer-wins write. An error stores nothing.
    Fold(&'a (dyn Fn(&Object, &Dot) -> Result<Version, Error> + Sync)),
}

/// Where an object lives on this node: among its own replicas, or as a hint for another node.
#[derive(Clone, Copy, Debug)]
pub enum Slot<'a> {
    /// This node's own replica of the key.
    Own,
    /// Held for `target`, a primary of the key that could not take it.
    HintFor(&'a NodeId),
}

/// See the module docs.
pub struct Replica<E: Engine> {
    engine: E,
    actor: Actor,
    stripes: Vec<Mutex<()>>,
    corrupt_total: AtomicU64,
    reap_grace_ms: u64,
    hint_limits: HintLimits,
    /// Largest object a client write may leave, as stored (`limits.object_bytes_max`).
    object_bytes_max: usize,
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
    /// The cross-region queue's counts ([`xr`]).
    xr: Mutex<XrBook>,
    /// Woken when entries are queued (the cross-region worker waits on it).
    xr_queued: tokio::sync::Notify,
    /// Expiry bookkeeping: what the own stores of expiring objects will leave for compaction
    /// to drop ([`crate::expiry`]).
    expiry: Arc<crate::expiry::Expiry>,
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
                return Err(Error::Startup(format!(
                    "data directory belongs to node {:?}, not {:?}",
                    String::from_utf8_lossy(&owner),
                    node.as_str()
                )));
            }
        }
        if let Some(format) = engine.get(Space::Meta, META_STORE_FORMAT)? {
            let format = <[u8; 4]>::try_from(format.as_slice())
                .map(u32::from_le_bytes)
                .map_err(|_| {
                    Error::Startup(format!(
                        "the data directory's store format marker is {} bytes, not 4: corrupt",
                        format.len()
                    ))
                })?;
            if format > STORE_FORMAT {
                return Err(Error::Startup(format!(
                    "the data directory is of store format {format}, written by a newer release; \
                     this build ({}) reads formats up to {STORE_FORMAT}: downgrading is not \
                     supported, run the newer release",
                    env!("CARGO_PKG_VERSION")
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
        .put(Space::Meta, META_CLEAN.to_vec(), vec![0])
        .put(
            Space::Meta,
            META_STORE_FORMAT.to_vec(),
            STORE_FORMAT.to_le_bytes().to_vec(),
        );
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
        let xr = count_queue(&engine)?;
        let replica = Replica {
            engine,
            actor: Actor::new(node, epoch),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            corrupt_total: AtomicU64::new(0),
            reap_grace_ms,
            hint_limits: HintLimits::default(),
            object_bytes_max: crate::config::Limits::default().object_bytes_max,
            hints: Mutex::new(hints),
            startup: startup.clone(),
            stand_in_seq: AtomicU64::new(stand_in_seq),
            dot_seq: AtomicU64::new(dot_seq),
            trees: OnceLock::new(),
            closed: AtomicBool::new(false),
            startup_pending: AtomicBool::new(startup_record.is_some()),
            startup_record: Mutex::new(startup_record),
            xr: Mutex::new(xr),
            xr_queued: tokio::sync::Notify::new(),
            expiry: Arc::default(),
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

    /// Uses `expiry` for the expiry bookkeeping of stores (the one whose
    /// [`Expiry::data_filter`](crate::expiry::Expiry::data_filter) the engine was opened with).
    pub fn set_expiry(&mut self, expiry: Arc<crate::expiry::Expiry>) {
        self.expiry = expiry;
    }

    /// The expiry bookkeeping ([`crate::expiry`]).
    pub fn expiry(&self) -> &Arc<crate::expiry::Expiry> {
        &self.expiry
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

    /// Loads the object of `slot`.
    fn load_slot(&self, slot: Slot<'_>, storage_key: &[u8]) -> Result<Object, Error> {
        match slot {
            Slot::Own => self.load(storage_key),
            Slot::HintFor(t) => Ok(self
                .load_hint(t, storage_key)?
                .map(|(h, _)| h.object)
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

    /// Stores `obj` (replacing `old`) with, in the same batch, an entry of the cross-region
    /// queue for each of `xr` ([`xr`]).
    fn store(
        &self,
        key_hash: u64,
        storage_key: &[u8],
        old: &Object,
        obj: &Object,
        xr: &[Arc<str>],
        now_ms: u64,
    ) -> Result<Durable, Error> {
        // No reap instant in the record: an expiring object goes by the engine's compaction
        // filter, which reads the object itself; anything else only by the reaper (module docs).
        tracing::trace!(node = %self.actor.node, key = %String::from_utf8_lossy(storage_key), ?old, new = ?obj, "store");
        let record = encode_record(obj, None);
        let expires_at = obj.expires_at_ms();
        let record_bytes = record.len();
        let mut b = WriteBatch::new();
        b.put(Space::Data, storage_key.to_vec(), record);
        let queued = self.xr_enqueue(&mut b, xr, key_hash, storage_key, now_ms);
        // An expiring object needs no reap entry: compaction drops it on every replica by
        // itself. A tombstone does (the reaper checks every primary holds it first).
        if let Some(reap_at) = obj
            .reap_at_ms(self.reap_grace_ms)
            .filter(|_| expires_at.is_none())
        {
            b.put(
                Space::Meta,
                reap_queue_key(reap_at, storage_key),
                Vec::new(),
            );
            metrics::counter!(crate::metrics::REAP_QUEUED).increment(1);
        }
        let committed = self.commit_tracked(
            b,
            storage_key,
            tree_digest(storage_key, old),
            tree_digest(storage_key, obj),
        );
        match &committed {
            Ok(_) if !queued.is_empty() => self.xr_notify(),
            Ok(_) => {}
            Err(_) => self.xr_unqueue(&queued),
        }
        if let (Ok(_), Some(at)) = (&committed, expires_at) {
            self.expiry
                .record_write(at, storage_key.len() + record_bytes);
        }
        committed
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

    /// Stores `obj` in `slot` (replacing `before`; under the key's stripe lock); a hint takes
    /// stand-in epoch `stand_in` if given, else keeps its own. Only an own copy queues for
    /// other regions (`xr`).
    #[allow(clippy::too_many_arguments)]
    fn store_slot(
        &self,
        slot: Slot<'_>,
        key_hash: u64,
        storage_key: &[u8],
        before: &Object,
        obj: &Object,
        stand_in: Option<u64>,
        xr: &[Arc<str>],
        now_ms: u64,
    ) -> Result<Durable, Error> {
        match slot {
            Slot::Own => self.store(key_hash, storage_key, before, obj, xr, now_ms),
            Slot::HintFor(t) => {
                let existing = self.load_hint(t, storage_key)?;
                let existing = existing
                    .as_ref()
                    .map(|(h, raw)| (h, stored_hint_bytes(t, storage_key, raw)));
                self.store_hint(t, key_hash, storage_key, obj, existing, stand_in, now_ms)
            }
        }
    }

    /// Sets the largest object a client write may leave (`limits.object_bytes_max`).
    pub fn set_object_bytes_max(&mut self, bytes_max: usize) {
        self.object_bytes_max = bytes_max;
    }

    /// Applies a client write as coordinator: the new sibling gets a fresh dot of this replica's
    /// actor. Returns the resulting object and the new dot once the write is durable. Refused,
    /// with nothing stored, if it would grow the object past `object_bytes_max` as stored (an object that grew past it by merges may
    /// still shrink: a write with a context that supersedes siblings is the way out).
    #[allow(clippy::too_many_arguments)]
    pub async fn coordinate(
        &self,
        slot: Slot<'_>,
        key_hash: u64,
        storage_key: &[u8],
        ctx: &CausalContext,
        version: Version,
        now_ms: u64,
    ) -> Result<(Object, Dot), Error> {
        self.coordinate_queuing(
            slot,
            key_hash,
            storage_key,
            Change::Put { ctx, version },
            now_ms,
            &[],
        )
        .await
    }

    /// [`Replica::coordinate`], whose store of an own copy also queues the write for the
    /// regions `xr`, in the same batch ([`xr`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn coordinate_queuing(
        &self,
        slot: Slot<'_>,
        key_hash: u64,
        storage_key: &[u8],
        change: Change<'_>,
        now_ms: u64,
        xr: &[Arc<str>],
    ) -> Result<(Object, Dot), Error> {
        // Every dot of this actor was drawn from its sequence, so a context that names a
        // higher counter of it is forged (a token's CRC is no signature); taking it would
        // move the sequence — for every key — to wherever the token says, up to overflow.
        let claimed = match &change {
            Change::Put { ctx, .. } => ctx.max_counter(&self.actor),
            Change::Fold(_) => 0,
        };
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
            let mut stand_in = None;
            let (actor, floor) = match slot {
                Slot::Own => (
                    self.actor.clone(),
                    self.dot_seq.fetch_add(1, Ordering::SeqCst) + 1,
                ),
                Slot::HintFor(t) => {
                    // The hint's own stand-in actor, or a fresh one for a new hint (see
                    // `hints.rs`, "Stand-in actors").
                    let actor = match self
                        .load_hint(t, storage_key)?
                        .and_then(|(h, _)| h.stand_in)
                    {
                        Some(epoch) => Actor::new(self.actor.node.clone(), epoch),
                        None => self.stand_in_actor(),
                    };
                    stand_in = Some(actor.epoch);
                    (actor, 1)
                }
            };
            let dot = match change {
                Change::Put { ctx, version } => {
                    // The context is applied whole, on an own copy as on a stand-in's hint: its
                    // `seen` joins the clock even where it names writes this copy has not
                    // received yet, so the new version supersedes them on every replica they
                    // reach by sync. Clamped to this copy's clock, a write coordinated by a
                    // replica behind the client's read left what the client saw (and meant to
                    // overwrite or delete) as a sibling: an acknowledged delete came back
                    // (seed 20111). A context is genuine — signed under the cluster keyring
                    // for this key — so it names only events of this key that a replica
                    // holds or held; a counter of this node's own actor beyond its sequence
                    // is refused above.
                    obj.update_at_least(ctx, &actor, floor, version, now_ms)
                }
                Change::Fold(make) => {
                    let dot = obj.next_dot(&actor, floor);
                    let version = make(&obj, &dot)?;
                    obj.supersede(dot.clone(), version);
                    dot
                }
            };
            if matches!(slot, Slot::Own) {
                // The sequence stays at or above every counter minted, whatever the key's own
                // history counted (it cannot count higher today: contexts are checked above and
                // pre-sequence directories get a new epoch).
                self.dot_seq.fetch_max(dot.counter, Ordering::SeqCst);
            }
            let actors = obj.clock().len();
            if actors > yeskv_core::codec::CLOCK_ACTORS_MAX {
                return Err(Error::HistoryTooLong {
                    actors,
                    max: yeskv_core::codec::CLOCK_ACTORS_MAX,
                });
            }
            let count = obj.siblings().len();
            // Past the limit, an object could not replicate (issue 14: it outgrew the RPC frame).
            let bytes = record_len(&obj);
            if bytes > self.object_bytes_max && bytes > record_len(&before) {
                return Err(Error::ObjectTooLarge {
                    bytes,
                    siblings: count,
                    max: self.object_bytes_max,
                });
            }
            let durable = self.store_slot(
                slot,
                key_hash,
                storage_key,
                &before,
                &obj,
                stand_in,
                xr,
                now_ms,
            )?;
            (obj, dot, durable)
        };
        // Applied (visible to reads) from here on: a failure to make it durable leaves the
        // outcome unknown (`Uncertain`, answered as `Error::Indeterminate`), not "nothing
        // written".
        durable.wait().await?;
        Ok((obj, dot))
    }

    /// Extends the expiry of this node's own copy of a key to at least `expires_at_ms` (a
    /// touch: [`Object::extend_expiry`], no new version). `Ok(false)` when the copy holds no
    /// live value (nothing to extend: an expired session is not brought back).
    pub async fn touch(
        &self,
        key_hash: u64,
        storage_key: &[u8],
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<bool, Error> {
        let durable = {
            let _guard = self.stripe(key_hash).lock();
            let mut obj = self.load(storage_key)?;
            if !obj.visible(now_ms).any(|s| !s.version.is_tombstone()) {
                return Ok(false);
            }
            let before = obj.clone();
            if !obj.extend_expiry(expires_at_ms) {
                return Ok(true);
            }
            self.store(key_hash, storage_key, &before, &obj, &[], now_ms)?
        };
        durable.wait().await?;
        Ok(true)
    }

    /// Merges an object from another replica (replication, read repair, anti-entropy, handoff)
    /// into `slot`. Returns the merged object once durable; writes nothing if the merge changes
    /// nothing (a hint is still created if none was held, so that handoff delivers it), nor if
    /// `incoming` is expiring and expired at `now_ms` while the slot holds nothing of the key
    /// (then returns the empty object: [`crate::expiry`]).
    pub async fn merge(
        &self,
        slot: Slot<'_>,
        key_hash: u64,
        storage_key: &[u8],
        incoming: &Object,
        now_ms: u64,
    ) -> Result<Object, Error> {
        let (obj, durable) = self.merge_applied(slot, key_hash, storage_key, incoming, now_ms)?;
        if let Some(durable) = durable {
            durable.wait().await?;
        }
        Ok(obj)
    }

    /// Merges many objects of other replicas into this node's own copies (a transfer batch):
    /// each as [`Replica::merge`] does, then waits once for all of them to be durable, so that
    /// a batch shares one group commit. Returns how many keys changed.
    pub async fn merge_many(
        &self,
        objects: &[(u64, Vec<u8>, Object)],
        now_ms: u64,
    ) -> Result<usize, Error> {
        let mut pending = Vec::new();
        for (key_hash, storage_key, incoming) in objects {
            let (_, durable) =
                self.merge_applied(Slot::Own, *key_hash, storage_key, incoming, now_ms)?;
            pending.extend(durable);
        }
        let changed = pending.len();
        for durable in pending {
            durable.wait().await?;
        }
        Ok(changed)
    }

    /// The merge of [`Replica::merge`], applied; the `Durable` of its write, if it wrote.
    fn merge_applied(
        &self,
        slot: Slot<'_>,
        key_hash: u64,
        storage_key: &[u8],
        incoming: &Object,
        now_ms: u64,
    ) -> Result<(Object, Option<Durable>), Error> {
        let _guard = self.stripe(key_hash).lock();
        let (mut obj, held) = match slot {
            // A corrupt record is never served; another replica's copy takes its place (the
            // rest of what it held comes back by anti-entropy from the others).
            Slot::Own => match self.load(storage_key) {
                Err(Error::Corrupt(reason)) => {
                    metrics::counter!(crate::metrics::CORRUPT_RECORDS_REPLACED).increment(1);
                    tracing::warn!(key = ?String::from_utf8_lossy(storage_key), %reason,
                        "replacing a corrupt record with a replica's copy");
                    (Object::new(), false)
                }
                loaded => (loaded?, true),
            },
            Slot::HintFor(t) => match self.load_hint(t, storage_key)? {
                Some((h, _)) => (h.object, true),
                None => (Object::new(), false),
            },
        };
        // An expired expiring object never comes back into a copy (or a hint) that holds
        // nothing of the key: this replica may have dropped the record, and every other may
        // drop it too ([`crate::expiry`]). Over something held, the merge is stored as ever
        // (the expired siblings stay invisible, their dots in the clock); over a corrupt
        // record too, which it replaces.
        let corrupt_own = matches!(slot, Slot::Own) && !held;
        if obj.is_empty() && !corrupt_own && crate::expiry::expired(incoming, now_ms) {
            crate::expiry::skipped("merge");
            return Ok((obj, None));
        }
        let before = obj.clone();
        obj.sync(incoming);
        if obj == before && held {
            return Ok((obj, None));
        }
        let durable = self.store_slot(
            slot,
            key_hash,
            storage_key,
            &before,
            &obj,
            None,
            &[],
            now_ms,
        )?;
        Ok((obj, Some(durable)))
    }
}

/// Writes the startup record `b` and makes it durable (flushed, whatever the sync mode).
fn write_startup_record<E: Engine>(engine: &E, b: &WriteBatch) -> Result<(), yeskv_storage::Error> {
    drop(engine.write(b.clone())?);
    engine.flush()
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
    async fn a_directory_of_a_newer_store_format_is_refused_and_left_alone() {
        let engine = Arc::new(MemoryEngine::new());
        let (r, _) = Replica::open(engine.clone(), node(), 0, || 5)
            .await
            .expect("open");
        let marker = engine.get(Space::Meta, META_STORE_FORMAT).expect("get");
        assert_eq!(marker, Some(STORE_FORMAT.to_le_bytes().to_vec()));
        r.close_cleanly().await.expect("close");
        // Release 0.1.0 wrote no marker: still opened, and marked.
        let mut b = WriteBatch::new();
        b.delete(Space::Meta, META_STORE_FORMAT.to_vec());
        let _durable = engine.write(b).expect("write");
        let (r, s) = Replica::open(engine.clone(), node(), 0, || 6)
            .await
            .expect("a directory of 0.1.0 opens");
        assert_eq!((s, r.actor().epoch), (Startup::Clean, 5));
        r.close_cleanly().await.expect("close");
        // A newer release's directory: refused, and nothing written (still clean, same epoch).
        let mut b = WriteBatch::new();
        b.put(
            Space::Meta,
            META_STORE_FORMAT.to_vec(),
            (STORE_FORMAT + 1).to_le_bytes().to_vec(),
        );
        let _durable = engine.write(b).expect("write");
        let error = match Replica::open(engine.clone(), node(), 0, || 7).await {
            Ok(_) => panic!("a newer store format must be refused"),
            Err(error) => error.to_string(),
        };
        assert!(
            error.contains(&format!("store format {}", STORE_FORMAT + 1))
                && error.contains("downgrading is not supported"),
            "{error}"
        );
        let clean = engine.get(Space::Meta, META_CLEAN).expect("get");
        assert_eq!(clean, Some(vec![1]), "the refused open changed nothing");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn corrupt_record_is_an_error_and_counted() {
        let engine = Arc::new(MemoryEngine::new());
        let (r, _) = Replica::open(engine.clone(), node(), 0, || 1)
            .await
            .expect("open");
        let v = Version::value(b"hello".to_vec(), 1, None);
        r.coordinate(Slot::Own, 7, b"k", &CausalContext::empty(), v, 1)
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
            .coordinate(Slot::Own, 7, b"k", &CausalContext::empty(), v, 2)
            .await
            .is_err());
    }

    /// A replica's copy replaces a corrupt record: the merge succeeds and the key reads again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_merge_replaces_a_corrupt_record() {
        let engine = Arc::new(MemoryEngine::new());
        let (r, _) = Replica::open(engine.clone(), node(), 0, || 1)
            .await
            .expect("open");
        let v = Version::value(b"hello".to_vec(), 1, None);
        let (good, _) = r
            .coordinate(Slot::Own, 7, b"k", &CausalContext::empty(), v, 1)
            .await
            .expect("write");
        let mut raw = engine
            .get(Space::Data, b"k")
            .expect("get")
            .expect("present");
        raw[0] ^= 0x55;
        engine.poke(Space::Data, b"k", &raw);
        assert!(matches!(r.read(b"k"), Err(Error::Corrupt(_))));
        let merged = r.merge(Slot::Own, 7, b"k", &good, 2).await.expect("merge");
        assert_eq!(merged, good);
        assert_eq!(r.read(b"k").expect("readable again"), good);
    }

    /// A plain key never refuses a write for its number of siblings (issue 16): the
    /// coordinator flags the object instead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn blind_writes_are_never_refused_for_their_siblings() {
        let engine = Arc::new(MemoryEngine::new());
        let (r, _) = Replica::open(engine, node(), 0, || 1).await.expect("open");
        for i in 0..200u8 {
            let v = Version::value(vec![i], 1, None);
            r.coordinate(Slot::Own, 1, b"k", &CausalContext::empty(), v, 1)
                .await
                .expect("write");
        }
        assert_eq!(r.read(b"k").expect("read").siblings().len(), 200);
    }

    /// Seed 20111: a client read `v` from one replica and deleted the key through another
    /// that had not received `v` yet. The tombstone must supersede `v` wherever the two meet:
    /// the coordinator takes the context whole, so the tombstone's clock covers `v`'s dot and
    /// a merge drops `v`, in either direction. (Clamped to the coordinator's copy, the context
    /// lost `v`'s dot and `v` came back as a sibling of the acknowledged delete.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_delete_through_a_replica_behind_the_read_supersedes_what_was_read() {
        let (a, _) = Replica::open(Arc::new(MemoryEngine::new()), node(), 0, || 1)
            .await
            .expect("open");
        let n2 = NodeId::new("n2").expect("id");
        let (b, _) = Replica::open(Arc::new(MemoryEngine::new()), n2, 0, || 2)
            .await
            .expect("open");
        let value = |v: &[u8], at| Version::value(v.to_vec(), at, None);
        // Both copies hold v1; then v2 overwrites it on `a` only (`b` is cut off).
        let (v1, _) = a
            .coordinate(
                Slot::Own,
                1,
                b"k",
                &CausalContext::empty(),
                value(b"v1", 1),
                1,
            )
            .await
            .expect("write v1");
        b.merge(Slot::Own, 1, b"k", &v1, 1).await.expect("merge v1");
        let (v2, v2_dot) = a
            .coordinate(Slot::Own, 1, b"k", &v1.context(), value(b"v2", 2), 2)
            .await
            .expect("write v2");
        // The client reads v2 from `a` and deletes through `b`.
        let (tombstone, _) = b
            .coordinate(Slot::Own, 1, b"k", &v2.context(), Version::tombstone(3), 3)
            .await
            .expect("delete");
        assert!(
            tombstone.clock().contains(&v2_dot),
            "the tombstone's clock covers what the client read: {tombstone:?}"
        );
        let deleted = |o: &Object| o.siblings().iter().all(|s| s.version.is_tombstone());
        // `b`'s tombstone reaches `a`, and `a`'s v2 reaches `b`: v2 is gone on both.
        let on_a = a
            .merge(Slot::Own, 1, b"k", &tombstone, 4)
            .await
            .expect("merge");
        assert!(deleted(&on_a), "v2 came back on a: {on_a:?}");
        let on_b = b.merge(Slot::Own, 1, b"k", &v2, 4).await.expect("merge");
        assert!(deleted(&on_b), "v2 came back on b: {on_b:?}");
        assert_eq!(on_a, on_b);
    }

    /// A fold supersedes every sibling held, with a version made from the object.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_fold_supersedes_every_sibling() {
        let engine = Arc::new(MemoryEngine::new());
        let (r, _) = Replica::open(engine, node(), 0, || 1).await.expect("open");
        for i in 0..3u8 {
            let v = Version::value(vec![i], 1, None);
            r.coordinate(Slot::Own, 1, b"k", &CausalContext::empty(), v, 1)
                .await
                .expect("write");
        }
        let sum = |o: &Object, _: &Dot| -> Result<Version, Error> {
            let total: u8 = o
                .siblings()
                .iter()
                .filter_map(|s| s.version.value.as_ref())
                .map(|v| v[0])
                .sum();
            Ok(Version::value(vec![total], 2, None))
        };
        let (obj, dot) = r
            .coordinate_queuing(Slot::Own, 1, b"k", Change::Fold(&sum), 2, &[])
            .await
            .expect("fold");
        assert_eq!(obj.siblings().len(), 1);
        assert_eq!(obj.siblings()[0].version.value, Some(vec![3]));
        assert!(obj.clock().contains(&dot));
        let refuse =
            |_: &Object, _: &Dot| -> Result<Version, Error> { Err(Error::BadRequest("no".into())) };
        assert!(r
            .coordinate_queuing(Slot::Own, 1, b"k", Change::Fold(&refuse), 3, &[])
            .await
            .is_err());
        assert_eq!(r.read(b"k").expect("read"), obj);
    }

    /// Issue 14: blind writes pile up siblings until the object would pass its limit; that
    /// write is refused (`413`) and stores nothing, as a stand-in too; a write whose context
    /// supersedes the siblings is taken, and so is one that shrinks an object already past a
    /// (lowered) limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn object_limit_refuses_growth_without_writing() {
        let engine = Arc::new(MemoryEngine::new());
        let (mut r, _) = Replica::open(engine, node(), 0, || 1).await.expect("open");
        r.set_object_bytes_max(3500);
        let blind = CausalContext::empty();
        let write = |i: u8| Version::value(vec![i; 1000], 1, None);
        for i in 0..3 {
            r.coordinate(Slot::Own, 1, b"k", &blind, write(i), 1)
                .await
                .expect("under the limit");
        }
        let held = r.read(b"k").expect("read");
        assert!(record_len(&held) <= 3500);
        for slot in [Slot::Own, Slot::HintFor(&NodeId::new("n2").expect("valid"))] {
            if let Slot::HintFor(t) = slot {
                r.merge(slot, 1, b"k", &held, 1).await.expect("a hint");
                assert_eq!(r.read_hint(t, b"k").expect("hint"), held);
            }
            let e = r.coordinate(slot, 1, b"k", &blind, write(9), 1).await;
            let Err(Error::ObjectTooLarge {
                bytes,
                siblings: 4,
                max: 3500,
            }) = e
            else {
                panic!("{e:?}");
            };
            assert!(bytes > 4000, "{bytes}");
        }
        assert_eq!(r.read(b"k").expect("read"), held, "nothing was stored");
        // Replica merges are never refused, whatever the size.
        let mut other = Object::new();
        let peer = Actor::new(NodeId::new("n3").expect("valid"), 5);
        other.update(&blind, &peer, write(7), 1);
        let merged = r.merge(Slot::Own, 1, b"k", &other, 1).await.expect("merge");
        assert_eq!(merged.siblings().len(), 4);
        assert!(record_len(&merged) > 3500);
        // Past a lowered limit, a write that shrinks the object is taken; one that grows it,
        // even by a little, is not.
        r.set_object_bytes_max(2000);
        let small = |i: u8| Version::value(vec![i; 10], 2, None);
        let (after, _) = r
            .coordinate(Slot::Own, 1, b"k", &other.context(), small(1), 2)
            .await
            .expect("a shrinking write");
        assert_eq!(after.siblings().len(), 4);
        assert!((2000..record_len(&merged)).contains(&record_len(&after)));
        let e = r.coordinate(Slot::Own, 1, b"k", &blind, small(2), 2).await;
        assert!(matches!(e, Err(Error::ObjectTooLarge { .. })), "{e:?}");
        // The read's context supersedes every sibling: the object is the new value alone.
        let (last, _) = r
            .coordinate(Slot::Own, 1, b"k", &after.context(), write(8), 3)
            .await
            .expect("the way out");
        assert_eq!(last.siblings().len(), 1);
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

    /// A store of an expiring object queues no reap entry and leaves its partition's tree
    /// alone (it is counted for the expiry worker instead); a tombstone queues one and counts in
    /// the tree; a value that never expires counts in the tree and queues nothing. Fails if
    /// expiring objects queue reap entries or count in trees.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn expiring_objects_queue_no_reap_entry_and_stay_out_of_the_tree() {
        let (r, _) = Replica::open(Arc::new(MemoryEngine::new()), node(), 0, || 1)
            .await
            .expect("open");
        for p in r.init_trees(8) {
            r.rebuild_tree(p).expect("rebuild");
        }
        let key = |k: &str| yeskv_core::keyspace::storage_key(3, b"b", k.as_bytes());
        let blind = &CausalContext::empty();
        let put = |k: &'static str, v: Version| {
            let r = &r;
            async move {
                r.coordinate(Slot::Own, 9, &key(k), blind, v, 1_000)
                    .await
                    .expect("write")
                    .0
            }
        };
        put("s", Version::value(b"sess".to_vec(), 1_000, Some(61_000))).await;
        assert_eq!(r.reap_queue_len(10).expect("queue"), 0);
        assert_eq!(r.tree_summary(3).expect("tree").keys, 0);
        let pending = r.expiry().pending();
        assert_eq!(pending.records, 1);
        assert!(pending.bytes > 10, "{pending:?}");
        put("forever", Version::value(b"v".to_vec(), 1_000, None)).await;
        assert_eq!(r.reap_queue_len(10).expect("queue"), 0);
        assert_eq!(r.tree_summary(3).expect("tree").keys, 1);
        let written = put("d", Version::value(b"v".to_vec(), 1_000, None)).await;
        r.coordinate(
            Slot::Own,
            9,
            &key("d"),
            &written.context(),
            Version::tombstone(1_000),
            1_000,
        )
        .await
        .expect("delete");
        assert_eq!(r.reap_queue_len(10).expect("queue"), 1);
        assert_eq!(r.tree_summary(3).expect("tree").keys, 2);
        // The session is touched without expiry: it counts in the tree from then on.
        let sess = r.read(&key("s")).expect("read");
        r.coordinate(
            Slot::Own,
            9,
            &key("s"),
            &sess.context(),
            Version::value(b"kept".to_vec(), 2_000, None),
            2_000,
        )
        .await
        .expect("touch");
        assert_eq!(r.tree_summary(3).expect("tree").keys, 3);
        assert_eq!(
            r.expiry().pending().records,
            1,
            "counted once, when it was expiring"
        );
    }

    /// An expired expiring object sent by another replica is not stored where nothing of the
    /// key is held — as an own copy or as a hint — and is merged as ever where something is.
    /// Fails if merges store expired objects into empty copies (a dropped record would come
    /// back by repair, hints or transfers).
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_expired_object_does_not_come_back_into_an_empty_copy() {
        let (r, _) = Replica::open(Arc::new(MemoryEngine::new()), node(), 0, || 1)
            .await
            .expect("open");
        let peer = Actor::new(NodeId::new("n2").expect("id"), 5);
        let blind = CausalContext::empty();
        let mut sess = Object::new();
        sess.update(
            &blind,
            &peer,
            Version::value(b"s".to_vec(), 1, Some(100)),
            1,
        );
        let target = NodeId::new("n3").expect("id");
        // Expired at 100: nothing stored, no hint made.
        for slot in [Slot::Own, Slot::HintFor(&target)] {
            let merged = r.merge(slot, 7, b"k", &sess, 100).await.expect("merge");
            assert!(merged.is_empty(), "{slot:?}");
        }
        assert!(r.read(b"k").expect("read").is_empty());
        assert_eq!(r.hints_pending(), 0);
        // Not expired yet: stored, as a copy and as a hint.
        let merged = r.merge(Slot::Own, 7, b"k", &sess, 99).await.expect("merge");
        assert_eq!(merged, sess);
        r.merge(Slot::HintFor(&target), 7, b"k", &sess, 99)
            .await
            .expect("hint");
        assert_eq!(r.hints_pending(), 1);
        // Where something is held, an expired object is merged as ever: its dots join the
        // clock (they may supersede what the copy holds) and its siblings stay hidden.
        let mut later = sess.clone();
        later.update(
            &sess.context(),
            &peer,
            Version::value(b"t".to_vec(), 2, Some(150)),
            2,
        );
        let merged = r
            .merge(Slot::Own, 7, b"k", &later, 200)
            .await
            .expect("merge");
        assert_eq!(merged, later);
        assert_eq!(r.read(b"k").expect("read"), later);
        assert!(merged.is_deleted_at(200));
    }

    /// The compaction filter made from the replica's expiry drops an expired session from the
    /// engine, past the grace and by the filter's clock, and counts it; the anti-entropy tree
    /// is the same before and after (expiring objects were never in it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn compaction_drops_expired_sessions_and_leaves_the_tree_alone() {
        struct At(std::sync::atomic::AtomicU64);
        impl crate::clock::Clock for At {
            fn now_ms(&self) -> u64 {
                self.0.load(Ordering::SeqCst)
            }
        }
        let clock = Arc::new(At(std::sync::atomic::AtomicU64::new(0)));
        let expiry = Arc::new(crate::expiry::Expiry::new(5_000));
        let engine = Arc::new(MemoryEngine::new());
        engine.set_data_filter(Some(expiry.data_filter(clock.clone())));
        let (mut r, _) = Replica::open(engine.clone(), node(), 0, || 1)
            .await
            .expect("open");
        r.set_expiry(expiry.clone());
        for p in r.init_trees(8) {
            r.rebuild_tree(p).expect("rebuild");
        }
        let blind = CausalContext::empty();
        for i in 0..50u32 {
            let k = yeskv_core::keyspace::storage_key(3, b"b", &i.to_be_bytes());
            let exp = (i % 2 == 0).then_some(10_000);
            r.coordinate(
                Slot::Own,
                u64::from(i),
                &k,
                &blind,
                Version::value(vec![1; 100], 1, exp),
                1,
            )
            .await
            .expect("write");
        }
        let tree = r.tree_summary(3).expect("tree");
        assert_eq!(tree.keys, 25);
        let count = || {
            engine
                .scan(Space::Data, &[0], &[0xff], 1000)
                .expect("scan")
                .len()
        };
        clock.0.store(14_999, Ordering::SeqCst);
        engine.compact(Space::Data).expect("compact");
        assert_eq!(count(), 50, "within the grace");
        assert_eq!(expiry.collect_due(14_999).records, 0);
        clock.0.store(15_000, Ordering::SeqCst);
        assert_eq!(
            expiry.collect_due(60_000).records,
            25,
            "due by the next minute"
        );
        engine.compact(Space::Data).expect("compact");
        assert_eq!(count(), 25);
        assert_eq!(expiry.dropped().records, 25);
        assert_eq!(r.tree_summary(3).expect("tree"), tree);
        r.rebuild_tree(3).expect("rebuild");
        assert_eq!(r.tree_summary(3).expect("tree"), tree);
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
        r.coordinate(Slot::Own, 9, key, &CausalContext::empty(), v, 1)
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
    /// Clearing a partition removes its keys from the disk and from its tree, and nothing of
    /// the other partitions.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn clearing_a_partition_removes_its_keys_and_tree_digests_only() {
        let (r, _) = Replica::open(Arc::new(MemoryEngine::new()), node(), 0, || 1)
            .await
            .expect("open");
        for p in r.init_trees(8) {
            r.rebuild_tree(p).expect("rebuild");
        }
        for (p, count) in [(3u16, 1500), (4, 10)] {
            for i in 0..count {
                let key = format!("k{i}");
                let sk = yeskv_core::keyspace::storage_key(p, b"b", key.as_bytes());
                let hash = yeskv_core::keyspace::key_hash(b"b", key.as_bytes());
                let v = Version::value(b"v".to_vec(), 1, None);
                r.coordinate(Slot::Own, hash, &sk, &CausalContext::empty(), v, 1)
                    .await
                    .expect("write");
            }
        }
        let other = r.tree_summary(4).expect("tree");
        assert_eq!(r.clear_partition(3).await.expect("clear"), 1500);
        assert_eq!(r.tree_summary(3).expect("tree").keys, 0);
        let (start, end) = yeskv_core::keyspace::partition_range(3);
        assert!(r
            .engine()
            .scan(Space::Data, &start, &end, 10)
            .expect("scan")
            .is_empty());
        assert_eq!(r.tree_summary(4).expect("tree"), other);
        assert_eq!(r.clear_partition(3).await.expect("again"), 0);
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
        let e = r.coordinate(Slot::Own, 1, b"k", &forged, v, 1).await;
        assert!(matches!(e, Err(Error::BadRequest(_))), "{e:?}");
        assert!(r.read(b"k").expect("read").siblings().is_empty());
        let v = Version::value(b"y".to_vec(), 1, None);
        let (_, dot) = r
            .coordinate(Slot::Own, 1, b"k", &CausalContext::empty(), v, 1)
            .await
            .expect("write");
        assert_eq!(dot.counter, 1);
    }

    /// A write that would leave the key's clock naming more actors than a context token
    /// carries is refused before anything is stored (409), and the stored object is unchanged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_write_past_the_clock_limit_is_refused_and_changes_nothing() {
        let (r, _) = Replica::open(Arc::new(MemoryEngine::new()), node(), 0, || 1)
            .await
            .expect("open");
        // A history of CLOCK_ACTORS_MAX writers, arrived by replication.
        let mut history = Object::new();
        for i in 0..yeskv_core::codec::CLOCK_ACTORS_MAX {
            let writer = Actor::new(NodeId::new(format!("w{i}")).expect("id"), 1);
            let ctx = CausalContext::from_seen(history.clock().clone());
            history.update(&ctx, &writer, Version::value(vec![1], 1, None), 1);
        }
        r.merge(Slot::Own, 1, b"k", &history, 1)
            .await
            .expect("merge");
        let stored = r.read(b"k").expect("read");
        let ctx = CausalContext::from_seen(stored.clock().clone());
        let v = Version::value(b"one too many".to_vec(), 1, None);
        let e = r.coordinate(Slot::Own, 1, b"k", &ctx, v, 1).await;
        assert!(matches!(e, Err(Error::HistoryTooLong { .. })), "{e:?}");
        assert_eq!(r.read(b"k").expect("read"), stored);
    }
}
