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
//! ## Actor epochs (the kv679 guard)
//! On start the replica reads its epoch and a clean-shutdown marker from the `meta` space. If the
//! marker is missing (first start, wiped directory, crash, `kill -9`) it picks a new random epoch
//! before serving: a crash may have lost the tail of the WAL (in `sync = "none"`), and with it the
//! knowledge of dots already handed out, so the old actor must never mint again.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use yeskv_core::codec::{decode_record, encode_record};
use yeskv_core::{Actor, CausalContext, Dot, NodeId, Object, Version};
use yeskv_storage::{Durable, Engine, Space, SyncMode, WriteBatch};

use crate::error::Error;

/// Lock stripes for per-key write serialization.
const STRIPES: usize = 1024;

const META_NODE_ID: &[u8] = b"node_id";
const META_EPOCH: &[u8] = b"actor_epoch";
const META_CLEAN: &[u8] = b"clean_shutdown";

/// See the module docs.
pub struct Replica<E: Engine> {
    engine: E,
    actor: Actor,
    stripes: Vec<Mutex<()>>,
    corrupt_total: AtomicU64,
    reap_grace_ms: u64,
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
        let (epoch, startup) = match stored_epoch {
            Some(e) if clean => (e, Startup::Clean),
            Some(_) => (random_epoch().max(1), Startup::Unclean),
            None => (random_epoch().max(1), Startup::Fresh),
        };
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
        engine.write(b)?.wait().await?;
        // The epoch must be on disk before any dot of it is handed out, whatever the sync mode.
        engine.flush()?;
        let replica = Replica {
            engine,
            actor: Actor::new(node, epoch),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            corrupt_total: AtomicU64::new(0),
            reap_grace_ms,
        };
        Ok((replica, startup))
    }

    /// Marks a clean shutdown after flushing everything: the next start keeps the epoch.
    pub async fn close_cleanly(&self) -> Result<(), Error> {
        self.engine.flush()?;
        let mut b = WriteBatch::new();
        b.put(Space::Meta, META_CLEAN.to_vec(), vec![1]);
        self.engine.write(b)?.wait().await?;
        self.engine.flush()?;
        Ok(())
    }

    /// This replica's actor.
    pub fn actor(&self) -> &Actor {
        &self.actor
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

    fn store(&self, storage_key: &[u8], obj: &Object) -> Result<Durable, Error> {
        let record = encode_record(obj, obj.reap_at_ms(self.reap_grace_ms));
        let mut b = WriteBatch::new();
        b.put(Space::Data, storage_key.to_vec(), record);
        let durable = if self.engine.sync_mode() == SyncMode::Always {
            // The fsync happens inside write(): keep it off the async workers' hot loop.
            tokio::task::block_in_place(|| self.engine.write(b))?
        } else {
            self.engine.write(b)?
        };
        Ok(durable)
    }

    /// Applies a client write as coordinator: the new sibling gets a fresh dot of this replica's
    /// actor. Returns the resulting object and the new dot once the write is durable.
    pub async fn coordinate(
        &self,
        key_hash: u64,
        storage_key: &[u8],
        ctx: &CausalContext,
        version: Version,
        now_ms: u64,
        siblings_max: usize,
    ) -> Result<(Object, Dot), Error> {
        let (obj, dot, durable) = {
            let _guard = self.stripe(key_hash).lock();
            let mut obj = self.load(storage_key)?;
            let dot = obj.update(ctx, &self.actor, version, now_ms);
            let count = obj.siblings().len();
            if count > siblings_max {
                return Err(Error::TooManySiblings {
                    count,
                    max: siblings_max,
                });
            }
            let durable = self.store(storage_key, &obj)?;
            (obj, dot, durable)
        };
        durable.wait().await?;
        Ok((obj, dot))
    }

    /// Merges an object from another replica (replication, read repair, anti-entropy, handoff).
    /// Returns the merged object once durable; writes nothing if the merge changes nothing.
    pub async fn merge(
        &self,
        key_hash: u64,
        storage_key: &[u8],
        incoming: &Object,
    ) -> Result<Object, Error> {
        let (obj, durable) = {
            let _guard = self.stripe(key_hash).lock();
            let mut obj = self.load(storage_key)?;
            let before = obj.clone();
            obj.sync(incoming);
            if obj == before {
                return Ok(obj);
            }
            let durable = self.store(storage_key, &obj)?;
            (obj, durable)
        };
        durable.wait().await?;
        Ok(obj)
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
        r.coordinate(7, b"k", &CausalContext::empty(), v, 1, 100)
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
            .coordinate(7, b"k", &CausalContext::empty(), v, 2, 100)
            .await
            .is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn sibling_limit_refuses_without_writing() {
        let engine = Arc::new(MemoryEngine::new());
        let (r, _) = Replica::open(engine, node(), 0, || 1).await.expect("open");
        for i in 0..3u8 {
            let v = Version::value(vec![i], 1, None);
            r.coordinate(1, b"k", &CausalContext::empty(), v, 1, 3)
                .await
                .expect("write");
        }
        let v = Version::value(vec![9], 1, None);
        let e = r
            .coordinate(1, b"k", &CausalContext::empty(), v, 1, 3)
            .await;
        assert!(matches!(
            e,
            Err(Error::TooManySiblings { count: 4, max: 3 })
        ));
        assert_eq!(r.read(b"k").expect("read").siblings().len(), 3);
    }
}
