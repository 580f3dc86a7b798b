//! The simulated disk: a [`SimEngine`] per node incarnation over a [`Disk`] that outlives the
//! node's crashes.
//!
//! A [`Disk`] holds what is on stable storage (a [`MemoryEngine`]) and a queue of writes that
//! were applied (visible to reads, like RocksDB's memtable plus a WAL in the page cache) but not
//! yet fsynced. Each write becomes durable at its *fsync deadline*: now plus the disk's current
//! latency (0 to 1 ms; a slow-disk fault adds tens to hundreds of ms). Deadlines never go
//! backwards, and making a write durable makes every earlier one durable too: the WAL is a
//! prefix, as with RocksDB's group commit. The engine reports [`SyncMode::Group`] (the product's
//! default): the replica acknowledges a write only after its [`Durable`] resolves, i.e. after the
//! simulated fsync.
//!
//! A crash ([`Disk::crash`], called by the driver when it crashes the node's host) throws away
//! every write not yet durable: the simulator models a node crash as the loss of the machine
//! (power cut), the harshest case, so a crashed node loses exactly what it had not fsynced and
//! never anything it acknowledged. (A plain process crash with RocksDB loses less: the WAL in the
//! page cache survives.) The replica then reopens on the same disk and, finding no clean-shutdown
//! marker, picks a new actor epoch.
//!
//! The planted bug (`--inject-bug lose-ack`, [`Disk::set_lose_ack`]): a share of the data writes
//! of one node are acknowledged (their `Durable` resolves) and then silently dropped instead of
//! reaching stable storage, and vanish from reads at that moment. The checkers must notice.
//!
//! Everything is deterministic: no wall clock (time is [`sim_now_ms`]), and the lose-ack choices
//! come from a seeded RNG.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yeskv_storage::{
    Durable, Engine, EngineStat, Error, MemoryEngine, Op, Rows, Space, SyncMode, WriteBatch,
};

use crate::clock::sim_now_ms;

/// Most writes waiting for their fsync on one disk; beyond this a write fails (the node answers
/// 503), so a stalled disk cannot grow memory without bound.
pub const PENDING_WRITES_MAX: usize = 100_000;

/// A write applied but not yet durable.
struct PendingWrite {
    seq: u64,
    batch: WriteBatch,
    /// The lose-ack bug picked it: acknowledged, then dropped.
    doomed: bool,
}

/// The planted bug's settings and randomness.
struct LoseAck {
    rate: f64,
    rng: StdRng,
}

struct DiskState {
    pending: VecDeque<PendingWrite>,
    next_seq: u64,
    /// Crashes so far; a completion from before a crash never applies its write.
    generation: u64,
    /// The latest fsync deadline handed out (deadlines are monotonic).
    last_deadline_ms: u64,
    /// Extra fsync latency (slow-disk fault), ms.
    slow_ms: u64,
    lose_ack: Option<LoseAck>,
    /// Writes lost to crashes (never acknowledged).
    lost_unsynced: u64,
    /// Writes acknowledged and then dropped by the planted bug.
    lost_acked: u64,
    /// Data records deleted (only the reaper deletes data records: reaped tombstones).
    data_deletes: u64,
    data_range_deletes: u64,
}

/// A node's stable storage and its not-yet-durable writes (see the module docs).
pub struct Disk {
    durable: MemoryEngine,
    state: Mutex<DiskState>,
}

impl Default for Disk {
    fn default() -> Self {
        Self::new()
    }
}

impl Disk {
    /// An empty disk.
    pub fn new() -> Self {
        Disk {
            durable: MemoryEngine::new(),
            state: Mutex::new(DiskState {
                pending: VecDeque::new(),
                next_seq: 1,
                generation: 0,
                last_deadline_ms: 0,
                slow_ms: 0,
                lose_ack: None,
                lost_unsynced: 0,
                lost_acked: 0,
                data_deletes: 0,
                data_range_deletes: 0,
            }),
        }
    }

    /// Plants the lose-ack bug: each data write is, with probability `rate`, acknowledged and
    /// then dropped. Choices come from `seed`.
    pub fn set_lose_ack(&self, rate: f64, seed: u64) {
        self.state.lock().lose_ack = Some(LoseAck {
            rate,
            rng: StdRng::seed_from_u64(seed),
        });
    }

    /// Sets the extra fsync latency (0: a healthy disk).
    pub fn set_slow_ms(&self, slow_ms: u64) {
        self.state.lock().slow_ms = slow_ms;
    }

    /// The machine lost power: every write not yet durable is gone. Returns how many.
    pub fn crash(&self) -> usize {
        let mut s = self.state.lock();
        s.generation += 1;
        let lost = s.pending.len();
        s.lost_unsynced += lost as u64;
        s.pending.clear();
        lost
    }

    /// Writes lost to crashes so far (none of them was acknowledged).
    pub fn lost_unsynced(&self) -> u64 {
        self.state.lock().lost_unsynced
    }

    /// Writes acknowledged and then dropped by the planted bug so far.
    pub fn lost_acked(&self) -> u64 {
        self.state.lock().lost_acked
    }

    /// Data records deleted so far: the replica deletes a data record when the reaper removes a
    /// tombstone and when a node receiving a partition anew clears what it held of it.
    pub fn data_deletes(&self) -> u64 {
        self.state.lock().data_deletes
    }

    /// Range deletes of data so far: a partition cleared by a node receiving it anew or by a
    /// former holder cleaning up.
    pub fn data_range_deletes(&self) -> u64 {
        self.state.lock().data_range_deletes
    }

    /// Reads one record as the node would see it now (durable state plus pending writes).
    pub fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let s = self.state.lock();
        for w in s.pending.iter().rev() {
            for op in w.batch.ops.iter().rev() {
                match op {
                    Op::Put {
                        space: sp,
                        key: k,
                        value,
                    } if *sp == space && k == key => return Ok(Some(value.clone())),
                    Op::Delete { space: sp, key: k } if *sp == space && k == key => {
                        return Ok(None)
                    }
                    Op::DeleteRange {
                        space: sp,
                        start,
                        end,
                    } if *sp == space && key >= start.as_slice() && key < end.as_slice() => {
                        return Ok(None)
                    }
                    _ => {}
                }
            }
        }
        self.durable.get(space, key)
    }

    /// Makes every pending write up to `seq` durable (dropping the doomed ones), if no crash
    /// happened since `generation`.
    fn sync_through(&self, seq: u64, generation: u64) -> Result<(), Error> {
        let mut s = self.state.lock();
        if s.generation != generation {
            return Err(Error::Uncertain("the disk crashed before the fsync".into()));
        }
        while s.pending.front().is_some_and(|w| w.seq <= seq) {
            let Some(w) = s.pending.pop_front() else {
                break;
            };
            if w.doomed {
                s.lost_acked += 1;
                continue;
            }
            // The memory engine's writes cannot fail; its Durable is already complete.
            let _durable = self.durable.write(w.batch)?;
        }
        Ok(())
    }

    /// Sets what compacting the disk's data drops: the node's expiry rule at its simulated
    /// clock (set by each incarnation of the node when it starts).
    pub fn set_data_filter(&self, filter: Option<yeskv_storage::DataFilter>) {
        self.durable.set_data_filter(filter);
    }

    /// Makes everything pending durable now (the replica's `flush`).
    fn sync_all(&self) -> Result<(), Error> {
        let (seq, generation) = {
            let s = self.state.lock();
            (s.next_seq, s.generation)
        };
        self.sync_through(seq, generation)
    }

    fn apply(self: &Arc<Self>, batch: WriteBatch) -> Result<Durable, Error> {
        let now_ms = sim_now_ms();
        let mut s = self.state.lock();
        if s.pending.len() >= PENDING_WRITES_MAX {
            return Err(Error::Unavailable(format!(
                "{PENDING_WRITES_MAX} writes wait for the simulated fsync"
            )));
        }
        let seq = s.next_seq;
        s.next_seq += 1;
        let deadline_ms = (now_ms + 1 + s.slow_ms).max(s.last_deadline_ms);
        s.last_deadline_ms = deadline_ms;
        let touches_data = batch.ops.iter().any(|op| match op {
            Op::Put { space, .. } | Op::Delete { space, .. } | Op::DeleteRange { space, .. } => {
                *space == Space::Data
            }
        });
        s.data_range_deletes += batch
            .ops
            .iter()
            .filter(|op| matches!(op, Op::DeleteRange { space, .. } if *space == Space::Data))
            .count() as u64;
        s.data_deletes += batch
            .ops
            .iter()
            .filter(|op| matches!(op, Op::Delete { space, .. } if *space == Space::Data))
            .count() as u64;
        let doomed = match &mut s.lose_ack {
            Some(bug) if touches_data => bug.rng.random_bool(bug.rate),
            _ => false,
        };
        let generation = s.generation;
        s.pending.push_back(PendingWrite { seq, batch, doomed });
        drop(s);
        let disk = self.clone();
        Ok(Durable::deferred(Box::pin(async move {
            let wait_ms = deadline_ms.saturating_sub(sim_now_ms());
            if wait_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
            }
            disk.sync_through(seq, generation)
        })))
    }

    fn scan(&self, space: Space, start: &[u8], end: &[u8], limit: usize) -> Result<Rows, Error> {
        let s = self.state.lock();
        let in_range = |k: &[u8]| k >= start && k < end;
        // Pending deletes can hide at most this many durable rows (a pending range delete, any
        // number: then the durable rows are read whole).
        let ranges = s
            .pending
            .iter()
            .flat_map(|w| &w.batch.ops)
            .any(|op| matches!(op, Op::DeleteRange { space: sp, .. } if *sp == space));
        let extra = if ranges {
            usize::MAX
        } else {
            s.pending.iter().map(|w| w.batch.ops.len()).sum::<usize>()
        };
        let mut rows: BTreeMap<Vec<u8>, Vec<u8>> = self
            .durable
            .scan(space, start, end, limit.saturating_add(extra))?
            .into_iter()
            .collect();
        for w in &s.pending {
            for op in &w.batch.ops {
                match op {
                    Op::Put {
                        space: sp,
                        key,
                        value,
                    } if *sp == space && in_range(key) => {
                        rows.insert(key.clone(), value.clone());
                    }
                    Op::Delete { space: sp, key } if *sp == space && in_range(key) => {
                        rows.remove(key);
                    }
                    Op::DeleteRange {
                        space: sp,
                        start: from,
                        end: to,
                    } if *sp == space => {
                        rows.retain(|k, _| k < from || k >= to);
                    }
                    _ => {}
                }
            }
        }
        Ok(rows.into_iter().take(limit).collect())
    }
}

/// The engine one node incarnation opens on its [`Disk`].
#[derive(Clone)]
pub struct SimEngine {
    disk: Arc<Disk>,
}

impl SimEngine {
    /// An engine over `disk`.
    pub fn new(disk: Arc<Disk>) -> Self {
        SimEngine { disk }
    }
}

impl Engine for SimEngine {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.disk.get(space, key)
    }

    fn write(&self, batch: WriteBatch) -> Result<Durable, Error> {
        self.disk.apply(batch)
    }

    fn scan(&self, space: Space, start: &[u8], end: &[u8], limit: usize) -> Result<Rows, Error> {
        self.disk.scan(space, start, end, limit)
    }

    fn flush(&self) -> Result<(), Error> {
        self.disk.sync_all()
    }

    /// Makes everything durable, then compacts the durable state: the memory engine drops the
    /// data records the node's filter names, at the node's simulated clock (the expiry worker
    /// compacts; so does a former holder's cleanup, by range).
    fn compact(&self, space: Space) -> Result<(), Error> {
        self.disk.sync_all()?;
        self.disk.durable.compact(space)
    }

    fn compact_range(&self, space: Space, start: &[u8], end: &[u8]) -> Result<(), Error> {
        self.disk.sync_all()?;
        self.disk.durable.compact_range(space, start, end)
    }

    fn sync_mode(&self) -> SyncMode {
        // Never `Always`: the replica would call `block_in_place`, which a current-thread
        // runtime (every turmoil host) does not allow.
        SyncMode::Group
    }

    /// Changes when the disk's contents change other than by a write: a crash (which drops the
    /// writes not yet durable) and the planted bug dropping an acknowledged write. The product's
    /// object cache in front of this engine then forgets what it read.
    fn epoch(&self) -> u64 {
        let s = self.disk.state.lock();
        s.generation + s.lost_acked
    }

    fn stats(&self) -> Vec<EngineStat> {
        let mut stats = self.disk.durable.stats();
        stats.push(EngineStat {
            name: "sim_pending_writes",
            help: "Writes applied but not yet durable on the simulated disk.",
            value: self.disk.state.lock().pending.len() as f64,
        });
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &[u8], value: &[u8]) -> WriteBatch {
        let mut b = WriteBatch::new();
        b.put(Space::Data, key.to_vec(), value.to_vec());
        b
    }

    #[test]
    fn crash_loses_exactly_the_unsynced_writes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        rt.block_on(async {
            let disk = Arc::new(Disk::new());
            let e = SimEngine::new(disk.clone());
            e.write(put(b"a", b"1"))
                .expect("write")
                .wait()
                .await
                .expect("durable");
            let pending = e.write(put(b"b", b"2")).expect("write");
            // Visible before it is durable.
            assert_eq!(e.get(Space::Data, b"b").expect("get"), Some(b"2".to_vec()));
            assert_eq!(disk.crash(), 1);
            assert!(pending.wait().await.is_err(), "a crashed write never acks");
            assert_eq!(e.get(Space::Data, b"a").expect("get"), Some(b"1".to_vec()));
            assert_eq!(e.get(Space::Data, b"b").expect("get"), None);
            assert_eq!(disk.lost_unsynced(), 1);
        });
    }

    #[test]
    fn lose_ack_acknowledges_then_drops() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        rt.block_on(async {
            let disk = Arc::new(Disk::new());
            disk.set_lose_ack(1.0, 7);
            let e = SimEngine::new(disk.clone());
            e.write(put(b"a", b"1"))
                .expect("write")
                .wait()
                .await
                .expect("acknowledged");
            assert_eq!(e.get(Space::Data, b"a").expect("get"), None);
            assert_eq!(disk.lost_acked(), 1);
            // Meta writes are never dropped.
            let mut b = WriteBatch::new();
            b.put(Space::Meta, b"m".to_vec(), b"x".to_vec());
            e.write(b).expect("write").wait().await.expect("durable");
            assert_eq!(e.get(Space::Meta, b"m").expect("get"), Some(b"x".to_vec()));
        });
    }

    #[test]
    fn scan_overlays_pending_writes_on_durable_state() {
        let disk = Arc::new(Disk::new());
        let e = SimEngine::new(disk.clone());
        let _ = e.write(put(b"a", b"1")).expect("write");
        e.flush().expect("flush");
        let _ = e.write(put(b"b", b"2")).expect("write");
        let mut del = WriteBatch::new();
        del.delete(Space::Data, b"a".to_vec());
        let _ = e.write(del).expect("write");
        let rows = e.scan(Space::Data, b"", b"z", 10).expect("scan");
        assert_eq!(rows, vec![(b"b".to_vec(), b"2".to_vec())]);
    }
}
